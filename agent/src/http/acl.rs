//! `--require-token`: the one token that may do anything; no token is Consul's anonymous token
//! under a default-deny ACL policy, any other token is unknown. Refusals carry Consul's texts.

use super::{ApiError, Request};
use crate::state::Agent;

/// The AccessorID of Consul's anonymous token.
const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";

/// A permission an endpoint needs, with the resource it is checked on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Access<'a> {
    ServiceRead(&'a str),
    ServiceWrite(&'a str),
    NodeWrite(&'a str),
    AgentRead(&'a str),
    OperatorRead,
    OperatorWrite,
    IntentionsRead(&'a str),
    IntentionsWrite(&'a str),
    QueryWrite(&'a str),
}

impl Access<'_> {
    fn describe(&self) -> String {
        let (permission, segment) = match self {
            Access::ServiceRead(s) => ("service:read", Some(*s)),
            Access::ServiceWrite(s) => ("service:write", Some(*s)),
            Access::NodeWrite(s) => ("node:write", Some(*s)),
            Access::AgentRead(s) => ("agent:read", Some(*s)),
            Access::OperatorRead => ("operator:read", None),
            Access::OperatorWrite => ("operator:write", None),
            Access::IntentionsRead(s) => ("intentions:read", Some(*s)),
            Access::IntentionsWrite(s) => ("intentions:write", Some(*s)),
            Access::QueryWrite(s) => ("query:write", Some(*s)),
        };
        match segment {
            Some(segment) => format!("'{permission}' on {segment:?}"),
            None => format!("'{permission}'"),
        }
    }
}

enum Caller {
    Anyone,
    Anonymous,
    Unknown,
}

fn caller(agent: &Agent, req: &Request) -> Caller {
    let Some(required) = &agent.settings.require_token else {
        return Caller::Anyone;
    };
    match req.token() {
        None => Caller::Anonymous,
        Some(token) if &token == required => Caller::Anyone,
        Some(_) => Caller::Unknown,
    }
}

/// Refuses the request with 403 unless the caller holds `access`.
pub(crate) fn require(agent: &Agent, req: &Request, access: Access<'_>) -> Result<(), ApiError> {
    match caller(agent, req) {
        Caller::Anyone => Ok(()),
        Caller::Unknown => Err(ApiError::new(403, "ACL not found")),
        Caller::Anonymous => Err(ApiError::new(
            403,
            format!(
                "Permission denied: token with AccessorID '{ANONYMOUS_ACCESSOR}' lacks permission {}",
                access.describe()
            ),
        )),
    }
}

/// Like [`require`], for the checks where Consul 1.10 answers the bare
/// `acl.ErrPermissionDenied` (config entries): 403 `Permission denied`, naming nothing.
pub(crate) fn require_bare(agent: &Agent, req: &Request) -> Result<(), ApiError> {
    match caller(agent, req) {
        Caller::Anyone => Ok(()),
        Caller::Unknown => Err(ApiError::new(403, "ACL not found")),
        Caller::Anonymous => Err(ApiError::new(403, "Permission denied")),
    }
}

/// For endpoints Consul filters rather than refuses: `Ok(false)` means "show nothing" (and set
/// `X-Consul-Results-Filtered-By-ACLs`), an unknown token is still a 403.
pub(crate) fn may_read(agent: &Agent, req: &Request) -> Result<bool, ApiError> {
    match caller(agent, req) {
        Caller::Anyone => Ok(true),
        Caller::Anonymous => Ok(false),
        Caller::Unknown => Err(ApiError::new(403, "ACL not found")),
    }
}
