//! Column alignment as `github.com/ryanuber/columnize` prints it (the consul CLI's tables):
//! cells trimmed, columns padded to their widest cell, joined by two spaces, the last column
//! unpadded, and the whole text trimmed.

pub(crate) fn format(rows: &[String], delimiter: char) -> String {
    let cells: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r.split(delimiter).map(str::trim).collect())
        .collect();
    let columns = cells.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in &cells {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let lines: Vec<String> = cells
        .iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(widths[i] - cell.chars().count()));
                    line.push_str("  ");
                }
            }
            line
        })
        .collect();
    lines.join("\n").trim().to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_like_columnize() {
        let rows = vec!["ID|Source|Action".to_string(), "|web|allow".to_string()];
        assert_eq!(
            super::format(&rows, '|'),
            "ID  Source  Action\n    web     allow"
        );
    }
}
