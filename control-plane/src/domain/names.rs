//! Names and labels as the domain holds them — each built only by its `parse`, so a value of
//! these types is always valid — and the [`ValidationError`] that names the offending field.
//!
//! Normalisation choices: names, aliases and descriptions are trimmed; categories are lower-cased
//! (`Staging` is `staging`, `QA` is the custom label `qa`); an empty description is no
//! description.

use super::plan::Plan;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> ValidationError {
        invalid(field, message)
    }
}

pub(super) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.into(),
        message: message.into(),
    }
}

pub const WORKSPACE_NAME_MAX: usize = 100;
pub const ALIAS_MAX: usize = 64;
pub const DESCRIPTION_MAX: usize = 500;
pub const CATEGORY_MAX: usize = 32;
pub const EXTERNAL_ID_MAX: usize = 128;

pub const BUILTIN_CATEGORIES: [&str; 3] = ["production", "development", "staging"];

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }
    };
}

string_newtype!(
    /// 1–100 characters, no control characters.
    WorkspaceName
);
string_newtype!(
    /// The name of a plan that exists.
    PlanName
);
string_newtype!(
    /// 1–64 characters of `[A-Za-z0-9 _.:-]`, not blank. Unique per workspace (case-sensitive).
    Alias
);
string_newtype!(
    /// At most 500 characters, not empty.
    Description
);
string_newtype!(
    /// `production`, `development`, `staging` or a custom label of 1–32 `[a-z0-9_-]`.
    Category
);
string_newtype!(
    /// Whom a key belongs to in the caller's own system (`cus_4f2a`): 1–128 printable ASCII
    /// characters without spaces, since the filter forwards it as the header value
    /// `x-tollgate-external-id`.
    ExternalId
);

impl WorkspaceName {
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let name = input.trim();
        if name.is_empty() {
            return Err(invalid("name", "must not be blank"));
        }
        if name.chars().count() > WORKSPACE_NAME_MAX {
            return Err(invalid(
                "name",
                format!("must be at most {WORKSPACE_NAME_MAX} characters"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("name", "must not contain control characters"));
        }
        Ok(Self(name.to_owned()))
    }
}

impl PlanName {
    /// `input` must name one of `plans`.
    pub fn parse(input: &str, plans: &[Plan]) -> Result<Self, ValidationError> {
        if plans.iter().any(|p| p.name == input) {
            return Ok(Self(input.to_owned()));
        }
        let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
        // Quoted back only when it could be a plan's name: never a megabyte or control bytes.
        let quoted = if input.len() <= 32 && input.bytes().all(|b| b.is_ascii_graphic()) {
            format!(" '{input}'")
        } else {
            String::new()
        };
        Err(invalid(
            "plan",
            format!(
                "unknown plan{quoted} (expected one of: {})",
                names.join(", ")
            ),
        ))
    }
}

impl Alias {
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let alias = input.trim();
        if alias.is_empty() {
            return Err(invalid("alias", "must not be blank"));
        }
        if alias.chars().count() > ALIAS_MAX {
            return Err(invalid(
                "alias",
                format!("must be at most {ALIAS_MAX} characters"),
            ));
        }
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '.' | ':' | '-');
        if !alias.chars().all(allowed) {
            return Err(invalid(
                "alias",
                "may only contain letters, digits, spaces and _ . : -",
            ));
        }
        Ok(Self(alias.to_owned()))
    }
}

impl Description {
    /// `None` for an absent, empty or blank description.
    pub fn parse(input: Option<&str>) -> Result<Option<Self>, ValidationError> {
        let Some(text) = input.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if text.chars().count() > DESCRIPTION_MAX {
            return Err(invalid(
                "description",
                format!("must be at most {DESCRIPTION_MAX} characters"),
            ));
        }
        // Line breaks and tabs are text (the dashboard's field is a textarea); NUL and the
        // other controls are not.
        if text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(invalid(
                "description",
                "must not contain control characters other than line breaks and tabs",
            ));
        }
        Ok(Some(Self(text.to_owned())))
    }
}

impl Category {
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let category = input.trim().to_ascii_lowercase();
        if BUILTIN_CATEGORIES.contains(&category.as_str()) {
            return Ok(Self(category));
        }
        let label_ok = !category.is_empty()
            && category.len() <= CATEGORY_MAX
            && category
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
        if label_ok {
            Ok(Self(category))
        } else {
            Err(invalid(
                "category",
                format!(
                    "must be production, development, staging or a custom label of 1-{CATEGORY_MAX} characters [a-z0-9_-]"
                ),
            ))
        }
    }
}

impl ExternalId {
    /// Trimmed; then 1–128 of the printable ASCII characters `!` to `~`.
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let id = input.trim();
        if id.is_empty() || id.len() > EXTERNAL_ID_MAX || !id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(invalid(
                "external_id",
                format!("must be 1-{EXTERNAL_ID_MAX} printable ASCII characters without spaces"),
            ));
        }
        Ok(Self(id.to_owned()))
    }
}
