//! The languages a sandbox image can be built for.

use std::fmt;
use std::str::FromStr;

/// A language runtime image. `javascript` and `node` name the same image.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    Javascript,
    Ruby,
    Golang,
    /// E2B's `base` template: bash, coreutils, git, python3, sudo and the
    /// unprivileged default user `user` (uid 1000, passwordless sudo).
    Base,
}

/// The names [`Language::from_str`] accepts, as shown to users.
pub const VALID_NAMES: &str = "python, javascript, node, ruby, golang, base";

/// An unknown language name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown language {name:?} (valid: {VALID_NAMES})")]
pub struct UnknownLanguage {
    pub name: String,
}

impl Language {
    /// Every image, once each.
    pub const ALL: [Language; 5] = [
        Language::Python,
        Language::Javascript,
        Language::Ruby,
        Language::Golang,
        Language::Base,
    ];

    /// The canonical name, used in cache file names and sidecars.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Javascript => "javascript",
            Language::Ruby => "ruby",
            Language::Golang => "golang",
            Language::Base => "base",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Language {
    type Err = UnknownLanguage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "python" | "python3" => Ok(Language::Python),
            "javascript" | "node" | "nodejs" | "js" => Ok(Language::Javascript),
            "ruby" => Ok(Language::Ruby),
            "golang" | "go" => Ok(Language::Golang),
            "base" => Ok(Language::Base),
            _ => Err(UnknownLanguage {
                name: s.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_parse() {
        assert_eq!("python".parse(), Ok(Language::Python));
        assert_eq!("node".parse(), Ok(Language::Javascript));
        assert_eq!("JavaScript".parse(), Ok(Language::Javascript));
        assert_eq!("golang".parse(), Ok(Language::Golang));
        assert_eq!("ruby".parse(), Ok(Language::Ruby));
        assert_eq!("base".parse(), Ok(Language::Base));
        for l in Language::ALL {
            assert_eq!(l.as_str().parse(), Ok(l));
        }
    }

    #[test]
    fn unknown_language_lists_valid_names() {
        let err = "cobol".parse::<Language>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"cobol\""), "{msg}");
        assert!(
            msg.contains("python, javascript, node, ruby, golang"),
            "{msg}"
        );
        assert!("".parse::<Language>().is_err());
    }
}
