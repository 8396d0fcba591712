//! What a request that waited is told, as owned data. A lookup or lease answer is decided on
//! Envoy's main thread (where the module's callouts answer), but a request may only be
//! changed and resumed on its own worker thread: the decision travels there as a `Resumed`
//! through the request's scheduler.

use tollgate_core::action::{Action, HeaderChange, LocalReply};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedChange {
    Add(String, String),
    Remove(String),
    Set(String, String),
}

impl OwnedChange {
    pub fn of(change: HeaderChange) -> OwnedChange {
        match change {
            HeaderChange::Add(name, value) => OwnedChange::Add(name.into(), value.into()),
            HeaderChange::Remove(name) => OwnedChange::Remove(name.into()),
            HeaderChange::Set(name, value) => OwnedChange::Set(name.into(), value.into()),
        }
    }

    pub fn borrowed(&self) -> HeaderChange<'_> {
        match self {
            OwnedChange::Add(name, value) => HeaderChange::Add(name, value),
            OwnedChange::Remove(name) => HeaderChange::Remove(name),
            OwnedChange::Set(name, value) => HeaderChange::Set(name, value),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// Continue to the upstream after these request header changes.
    Pass(Vec<OwnedChange>),
    /// Answer with this local reply.
    Deny(LocalReply),
}

impl Resumed {
    /// `None` for `Action::Wait`: the request waits again (now for a lease).
    pub fn of(action: Action) -> Option<Resumed> {
        match action {
            Action::Pass(pass) => Some(Resumed::Pass(
                pass.header_changes().map(OwnedChange::of).collect(),
            )),
            Action::Deny(reply) => Some(Resumed::Deny(reply)),
            Action::Wait => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use tollgate_core::action::{Hide, Pass};
    use tollgate_core::config::LimitHeaders;
    use tollgate_core::denial::Denial;

    #[test]
    fn a_pass_keeps_every_header_change_in_order() {
        let pass = Pass {
            identity: None,
            hide: Some(Hide::Header(Cow::Borrowed("x-api-key"))),
            forward_meta: &[],
        };
        let expected: Vec<OwnedChange> = pass.header_changes().map(OwnedChange::of).collect();
        let Some(Resumed::Pass(changes)) = Resumed::of(Action::Pass(pass)) else {
            panic!("not a pass");
        };
        assert_eq!(changes, expected);
        assert_eq!(
            changes.last().map(OwnedChange::borrowed),
            Some(HeaderChange::Remove("x-api-key"))
        );
    }

    #[test]
    fn a_denial_keeps_its_reply_and_wait_is_nothing() {
        let reply = LocalReply::new(Denial::InvalidKey, 429, LimitHeaders::All, None);
        assert_eq!(
            Resumed::of(Action::Deny(reply.clone())),
            Some(Resumed::Deny(reply))
        );
        assert_eq!(Resumed::of(Action::Wait), None);
    }
}
