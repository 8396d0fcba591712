//! Public identifiers: a type prefix plus 16 random base62 characters (95 bits), so ids are
//! unguessable and say what they name.

use crate::base62;

const RANDOM_LEN: usize = 16;

pub fn workspace_id() -> String {
    format!("ws_{}", base62::random(RANDOM_LEN))
}

pub fn key_id() -> String {
    format!("key_{}", base62::random(RANDOM_LEN))
}

pub fn console_token_id() -> String {
    format!("ct_{}", base62::random(RANDOM_LEN))
}

/// Whether `id` (from a URL) could name anything: 1-64 printable ASCII characters. Others are
/// not found without asking the store (to PostgreSQL a NUL byte is not even text).
pub fn could_exist(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_and_length() {
        let ws = workspace_id();
        assert!(ws.starts_with("ws_") && ws.len() == 19, "{ws}");
        let key = key_id();
        assert!(key.starts_with("key_") && key.len() == 20, "{key}");
        assert_ne!(key_id(), key_id());
    }

    #[test]
    fn only_printable_ascii_ids_could_exist() {
        assert!(could_exist(&key_id()));
        for id in ["", "a b", "key_\u{0}", "ключ", &"k".repeat(65)] {
            assert!(!could_exist(id), "{id:?}");
        }
    }
}
