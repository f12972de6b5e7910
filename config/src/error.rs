//! [`ConfigError`], and how an error found in the merged document is traced
//! back to the dotted key and the line *of the user's file*: merging the
//! user's keys over the defaults loses positions, so the error's key path is
//! looked up again in the user's own parsed document, which keeps spans.

use std::fmt;
use std::ops::Range;

/// A configuration problem.
///
/// Its `Display` says where the problem is (the file name or the environment
/// variable, the 1-based line when the key is in the user's file) and which
/// dotted key, e.g.
/// `config.toml line 7: unknown key `media.portz`, expected one of ...` or
/// `config.toml line 3, key `limits.max_rooms`: invalid type: string "many", expected usize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the text came from: a path, `config`, or `environment variable NOOM_X`.
    pub(crate) origin: String,
    pub(crate) line: Option<usize>,
    /// Dotted key, e.g. `limits.max_rooms`.
    pub(crate) key: Option<String>,
    /// True when `key` does not exist in the schema (changes the wording).
    pub(crate) unknown_key: bool,
    pub(crate) message: String,
}

impl ConfigError {
    pub(crate) fn new(origin: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            origin: origin.into(),
            line: None,
            key: None,
            unknown_key: false,
            message: message.into(),
        }
    }

    /// The dotted key at fault, when there is one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The 1-based line in the user's file, when the key is in it.
    pub fn line(&self) -> Option<usize> {
        self.line
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        match (&self.key, self.unknown_key) {
            (Some(key), true) => write!(f, ": unknown key `{key}`")?,
            (Some(key), false) => write!(f, ", key `{key}`")?,
            (None, _) => {}
        }
        if self.unknown_key && !self.message.is_empty() {
            write!(f, ", {}", self.message)
        } else {
            write!(f, ": {}", self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line of byte offset `at` in `text`.
pub(crate) fn line_of(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text[..at].matches('\n').count() + 1
}

/// Byte span in the user's document of the dotted `path` (table keys and
/// array indices): the key's span for table entries, the element's span for
/// array items. `None` when the path is not in the user's text, i.e. the
/// value came from the defaults.
pub(crate) fn locate(doc: &toml::de::DeTable<'_>, path: &[String]) -> Option<Range<usize>> {
    let (first, rest) = path.split_first()?;
    let (key, value) = doc.iter().find(|(k, _)| k.get_ref().as_ref() == first)?;
    let mut span = key.span();
    let mut value = value;
    for segment in rest {
        let next = match value.get_ref() {
            toml::de::DeValue::Table(table) => table
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == segment)
                .map(|(k, v)| (k.span(), v)),
            toml::de::DeValue::Array(items) => segment
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i))
                .map(|v| (v.span(), v)),
            _ => None,
        };
        let (s, v) = next?;
        span = s;
        value = v;
    }
    Some(span)
}

/// Dotted path of a serde error, plus the offending name when the error is
/// about an unknown field (serde reports those at the parent's path).
pub(crate) fn error_path(path: &serde_path_to_error::Path, message: &str) -> (Vec<String>, bool) {
    let mut parts: Vec<String> = path
        .iter()
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
            _ => None,
        })
        .collect();
    let unknown = unknown_field(message);
    if let Some(field) = unknown {
        if parts.last().map(String::as_str) != Some(field) {
            parts.push(field.to_owned());
        }
    }
    (parts, unknown.is_some())
}

/// The name in serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::Config;

    /// The `Display` of the error `text` fails with.
    pub(crate) fn err_of(text: &str) -> String {
        Config::from_toml_str(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_nested_key_names_key_and_line() {
        let text = "[http]\nlisten = \"127.0.0.1:1\"\n\n[media]\nport = 1\n\nportz = 5\n";
        let err = Config::from_toml_str(text).unwrap_err();
        assert_eq!(err.key(), Some("media.portz"));
        assert_eq!(err.line(), Some(7));
        let msg = err.to_string();
        assert!(
            msg.starts_with("config line 7: unknown key `media.portz`, expected one of"),
            "{msg}"
        );
        assert!(msg.contains("`port`"), "{msg}");
        // Dotted form at top level.
        let err = err_of("\nmedia.portz = 5\n");
        assert!(
            err.contains("line 2") && err.contains("`media.portz`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_top_level_section_names_key_and_line() {
        let err = Config::from_toml_str("# c\n\n[video]\nx = 1\n").unwrap_err();
        assert_eq!(err.key(), Some("video"));
        assert_eq!(err.line(), Some(3), "{err}");
        assert!(err.to_string().contains("unknown key `video`"), "{err}");
        // Misspelled top-level scalar.
        let err = err_of("[http]\nlisten = \"0.0.0.0:1\"\n[logs]\nlevel = \"x\"\n");
        assert!(err.contains("line 3") && err.contains("`logs`"), "{err}");
    }

    #[test]
    fn unknown_key_inside_array_of_tables_is_located() {
        let text = "[[ice.servers]]\nurls = [\"stun:a.example\"]\n\n[[ice.servers]]\nurls = [\"stun:b.example\"]\npassword = \"x\"\n";
        let err = Config::from_toml_str(text).unwrap_err();
        assert_eq!(err.key(), Some("ice.servers.1.password"));
        assert_eq!(err.line(), Some(6), "{err}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let err = Config::from_toml_str("[limits]\n\nmax_rooms = \"many\"\n").unwrap_err();
        assert_eq!(err.key(), Some("limits.max_rooms"));
        assert_eq!(err.line(), Some(3));
        let msg = err.to_string();
        assert!(
            msg.starts_with("config line 3, key `limits.max_rooms`: invalid type: string"),
            "{msg}"
        );

        let err = err_of("[media]\nport = 70000\n");
        assert!(err.contains("line 2, key `media.port`"), "{err}");
        let err = err_of("[media]\nshards = -1\n");
        assert!(err.contains("line 2, key `media.shards`"), "{err}");
        let err = err_of("[media]\n\npublic_ip = \"nope\"\n");
        assert!(err.contains("line 3, key `media.public_ip`"), "{err}");
        let err = err_of("[http]\nlisten = \"localhost\"\n");
        assert!(err.contains("line 2, key `http.listen`"), "{err}");
        let err = err_of("[log]\nformat = \"xml\"\n");
        assert!(err.contains("line 2, key `log.format`"), "{err}");
        assert!(err.contains("human"), "{err}");
        // A bad element of a multi-line array points at the element's line.
        let err = err_of("[media]\nbind_ips = [\n  \"10.0.0.1\",\n  \"10.0.0.x\",\n]\n");
        assert!(err.contains("line 4, key `media.bind_ips.1`"), "{err}");
        // A whole section of the wrong type.
        let err = err_of("\nlimits = 5\n");
        assert!(err.contains("line 2, key `limits`"), "{err}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = Config::from_toml_str("[http]\nlisten = \"0.0.0.0:1\"\n[media\n").unwrap_err();
        assert_eq!(err.line(), Some(3), "{err}");
        let err = err_of("[limits]\nmax_rooms = 1\nmax_rooms = 2\n");
        assert!(err.contains("line 3"), "{err}");
    }
}
