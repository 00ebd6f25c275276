//! Error lists as Consul's Go libraries print them, for answers that collect several problems.

/// `hashicorp/go-multierror`'s default format: `1 error occurred:\n\t* ...\n\n`.
pub(crate) fn multierror(errors: &[String]) -> String {
    match errors {
        [one] => format!("1 error occurred:\n\t* {one}\n\n"),
        many => {
            let points: Vec<String> = many.iter().map(|e| format!("* {e}")).collect();
            format!(
                "{} errors occurred:\n\t{}\n\n",
                many.len(),
                points.join("\n\t")
            )
        }
    }
}

/// `mitchellh/mapstructure`'s decode error: the problems sorted, one `* ` line each.
pub(crate) fn mapstructure(errors: &[String]) -> String {
    let mut points: Vec<String> = errors.iter().map(|e| format!("* {e}")).collect();
    points.sort();
    format!(
        "{} error(s) decoding:\n\n{}",
        errors.len(),
        points.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_like_the_go_libraries() {
        assert_eq!(multierror(&["a".into()]), "1 error occurred:\n\t* a\n\n");
        assert_eq!(
            multierror(&["a".into(), "b".into()]),
            "2 errors occurred:\n\t* a\n\t* b\n\n"
        );
        assert_eq!(
            mapstructure(&["'b' bad".into(), "'a' bad".into()]),
            "2 error(s) decoding:\n\n* 'a' bad\n* 'b' bad"
        );
    }
}
