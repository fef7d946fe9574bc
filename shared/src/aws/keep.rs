//! How many of a kind of resource to keep: `bake-ami --keep` (images) and
//! `deploy-standby --keep-versions` (launch template versions).

use std::fmt;
use std::num::NonZeroUsize;

/// How many images (or template versions) to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The newest N.
    Newest(NonZeroUsize),
    /// Every one: nothing is removed.
    All,
}

impl Keep {
    /// The default of `--keep` and `--keep-versions`: the newest five.
    pub const DEFAULT: Self = Self::Newest(NonZeroUsize::new(5).expect("5 is not 0"));

    /// Parses `N` (1 or more) or `all`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("all") {
            return Ok(Self::All);
        }
        match text.parse::<usize>() {
            Ok(0) => Err(
                "0 would remove even what was just made; keep 1 or more, or `all` to remove nothing"
                    .to_owned(),
            ),
            Ok(n) => Ok(Self::Newest(NonZeroUsize::new(n).expect("not 0"))),
            Err(_) => Err(format!("{text:?} is neither a number of 1 or more nor `all`")),
        }
    }

    /// How many to keep; `None` for all.
    pub fn count(self) -> Option<usize> {
        match self {
            Self::Newest(n) => Some(n.get()),
            Self::All => None,
        }
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Newest(n) => write!(f, "{n}"),
            Self::All => f.write_str("all"),
        }
    }
}
