//! [`SourceUrl`]: where an integration's CSV files are (an S3 object, a glob in an S3 folder or a local folder), parsed and matched.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where an integration's CSV files are: one object, every object in a folder
/// matching a glob, or a local folder.
///
/// Accepted forms:
///
/// | URL | meaning |
/// |---|---|
/// | `s3://bucket/exports/users.csv` | that one object |
/// | `s3://bucket/exports/*.csv` | every object directly in `exports/` whose name matches the glob (`*` and `?`) |
/// | `s3://bucket/exports/` | shorthand for `s3://bucket/exports/*.csv` |
/// | `file:///srv/exports/users.csv`, `file:///srv/exports/*.csv`, `file:///srv/exports/` | the same on the local file system |
///
/// Only the last segment may hold a glob, and a glob never descends into
/// sub-folders, so the `success/` and `failed/` folders next to the files are never
/// imported again — unless the integration lists recursively
/// ([`S3Config::recursive`](crate::s3::S3Config::recursive)): then the glob
/// matches file names in the folder and every folder below it, except
/// `success/`, `failed/` and error-report folders.
///
/// **Date-partitioned folders**: `{yyyy}`, `{mm}`, `{dd}` and `{hh}` anywhere
/// after the bucket are replaced, at each run, by the run's date and hour in UTC
/// (zero-padded), e.g. `s3://bucket/exports/{yyyy}/{mm}/{dd}/` reads
/// `exports/2025/03/01/` on 1 March 2025; see [`SourceUrl::resolve`].
///
/// ```
/// use switchboard::s3::SourceUrl;
/// let url: SourceUrl = "s3://acme-exports/hr/*.csv".parse().unwrap();
/// assert_eq!(url.bucket(), Some("acme-exports"));
/// assert_eq!(url.folder(), "hr");
/// assert_eq!(url.pattern(), "*.csv");
/// assert!(url.is_glob());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SourceUrl {
    raw: String,
    location: Location,
    folder: String,
    pattern: String,
}

/// The backend a [`SourceUrl`] points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// An S3 bucket.
    S3 { bucket: String },
    /// A local folder (the folder that holds the files).
    Local { folder: PathBuf },
}

impl SourceUrl {
    /// Parses and checks a source URL; the error says what is wrong with it.
    ///
    /// The text after the bucket (or after `file://`) is taken literally, as the
    /// AWS CLI does: no percent-decoding, and `?` is a glob character, not a query.
    pub fn parse(raw: &str) -> Result<Self> {
        let raw = raw.trim();
        let hint = "expected s3://bucket/folder/file.csv, s3://bucket/folder/*.csv or file:///folder/file.csv";
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Err(Error::config(format!(
                "the source {raw:?} is not a URL; {hint}"
            )));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "s3" => {
                let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
                check_bucket_name(bucket, raw)?;
                let (folder, pattern) = split_pattern(path, raw)?;
                Ok(SourceUrl {
                    raw: raw.to_owned(),
                    location: Location::S3 {
                        bucket: bucket.to_owned(),
                    },
                    folder,
                    pattern,
                })
            }
            "file" => {
                let path = rest.strip_prefix("localhost").unwrap_or(rest);
                let Some(path) = path.strip_prefix('/') else {
                    return Err(Error::config(format!(
                        "the source {raw:?} is not an absolute path; a local folder is written with three slashes, like file:///srv/exports/*.csv"
                    )));
                };
                let (folder, pattern) = split_pattern(path, raw)?;
                Ok(SourceUrl {
                    raw: raw.to_owned(),
                    location: Location::Local {
                        folder: PathBuf::from(format!("/{folder}")),
                    },
                    folder: String::new(),
                    pattern,
                })
            }
            other => Err(Error::config(format!(
                "the source {raw:?} has the unsupported scheme {other:?}; {hint}"
            ))),
        }
    }

    /// True if the URL holds a date placeholder (`{yyyy}`, `{mm}`, `{dd}`, `{hh}`).
    pub fn has_date_placeholders(&self) -> bool {
        PLACEHOLDERS.iter().any(|p| self.raw.contains(p))
    }

    /// The source for a run at `at`: every `{yyyy}`, `{mm}`, `{dd}` and `{hh}`
    /// replaced by `at`'s year, month, day and hour (UTC, zero-padded).
    /// Without placeholders, the source itself.
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use switchboard::s3::SourceUrl;
    /// let url: SourceUrl = "s3://acme/exports/{yyyy}/{mm}/{dd}/users-{hh}.csv".parse().unwrap();
    /// let run = Utc.with_ymd_and_hms(2025, 3, 1, 7, 30, 0).unwrap();
    /// let resolved = url.resolve(run).unwrap();
    /// assert_eq!(resolved.folder(), "exports/2025/03/01");
    /// assert_eq!(resolved.pattern(), "users-07.csv");
    /// ```
    pub fn resolve(&self, at: chrono::DateTime<chrono::Utc>) -> Result<SourceUrl> {
        if !self.has_date_placeholders() {
            return Ok(self.clone());
        }
        let raw = self
            .raw
            .replace("{yyyy}", &at.format("%Y").to_string())
            .replace("{mm}", &at.format("%m").to_string())
            .replace("{dd}", &at.format("%d").to_string())
            .replace("{hh}", &at.format("%H").to_string());
        SourceUrl::parse(&raw)
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The bucket, for an `s3://` source.
    pub fn bucket(&self) -> Option<&str> {
        match &self.location {
            Location::S3 { bucket } => Some(bucket),
            Location::Local { .. } => None,
        }
    }

    /// The local folder, for a `file://` source.
    pub fn local_folder(&self) -> Option<&std::path::Path> {
        match &self.location {
            Location::Local { folder } => Some(folder),
            Location::S3 { .. } => None,
        }
    }

    /// The folder (key prefix without the trailing `/`) inside the bucket; empty
    /// for the bucket's root and for local sources.
    pub fn folder(&self) -> &str {
        &self.folder
    }

    /// The file name or glob pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// True if the pattern is a glob (holds `*` or `?`).
    pub fn is_glob(&self) -> bool {
        self.pattern.contains(['*', '?'])
    }

    pub(crate) fn location(&self) -> &Location {
        &self.location
    }

    /// The object-store path of the folder.
    pub(crate) fn folder_path(&self) -> ObjectPath {
        ObjectPath::from(self.folder.as_str())
    }

    /// The object-store path of the one object, when the source is not a glob.
    pub(crate) fn exact_path(&self) -> Option<ObjectPath> {
        (!self.is_glob()).then(|| self.folder_path().child(self.pattern.as_str()))
    }

    /// True if an object's file name matches the pattern.
    pub(crate) fn matches(&self, file_name: &str) -> bool {
        glob_match(self.pattern.as_bytes(), file_name.as_bytes())
    }
}

impl fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceUrl({:?})", self.raw)
    }
}

impl FromStr for SourceUrl {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        SourceUrl::parse(s)
    }
}

impl Serialize for SourceUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for SourceUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        SourceUrl::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The date placeholders [`SourceUrl::resolve`] replaces.
const PLACEHOLDERS: [&str; 4] = ["{yyyy}", "{mm}", "{dd}", "{hh}"];

fn check_bucket_name(bucket: &str, raw: &str) -> Result<()> {
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else if bucket.is_empty() {
        Err(Error::config(format!(
            "the source {raw:?} has no bucket; write it as s3://bucket/folder/file.csv"
        )))
    } else {
        Err(Error::config(format!(
            "the source {raw:?} has an invalid bucket name {bucket:?}: S3 bucket names are 3 to 63 lower-case letters, digits, dots and hyphens"
        )))
    }
}

fn split_pattern(path: &str, raw: &str) -> Result<(String, String)> {
    let (folder, last) = match path.rsplit_once('/') {
        Some((folder, last)) => (folder, last),
        None => ("", path),
    };
    if folder.contains(['*', '?']) {
        return Err(Error::config(format!(
            "the source {raw:?} has a glob in a folder name; only the file name may hold `*` or `?`"
        )));
    }
    if folder.split('/').any(|s| s == "." || s == "..")
        || (!folder.is_empty() && folder.split('/').any(str::is_empty))
    {
        return Err(Error::config(format!(
            "the source {raw:?} has an empty, `.` or `..` folder segment"
        )));
    }
    check_pattern(last, raw)?;
    let pattern = if last.is_empty() { "*.csv" } else { last };
    Ok((folder.to_owned(), pattern.to_owned()))
}

fn check_pattern(pattern: &str, raw: &str) -> Result<()> {
    if pattern == "." || pattern == ".." || pattern.contains('\\') {
        return Err(Error::config(format!(
            "the source {raw:?} has an invalid file name {pattern:?}"
        )));
    }
    Ok(())
}

/// Matches `*` (any run of characters) and `?` (one character) against a name.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    // Iterative matcher with single backtracking point: linear in practice.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            if pattern[p] == b'?' {
                // `?` matches one whole UTF-8 character.
                n += utf8_len(name[n]);
            } else {
                n += 1;
            }
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + utf8_len(name[sn]);
            star = Some((sp, n));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn parses_s3_object_and_glob() {
        let u = SourceUrl::parse("s3://bucket-1/a/b/users.csv").unwrap();
        assert_eq!(
            (u.bucket(), u.folder(), u.pattern()),
            (Some("bucket-1"), "a/b", "users.csv")
        );
        assert!(!u.is_glob());
        assert_eq!(u.exact_path().unwrap().as_ref(), "a/b/users.csv");

        let u = SourceUrl::parse("s3://bucket-1/users.csv").unwrap();
        assert_eq!(
            (u.folder(), u.exact_path().unwrap().as_ref()),
            ("", "users.csv")
        );

        let u = SourceUrl::parse("s3://bucket-1/exports/").unwrap();
        assert_eq!((u.folder(), u.pattern()), ("exports", "*.csv"));
        assert!(u.is_glob() && u.exact_path().is_none());

        let u = SourceUrl::parse("s3://bucket-1/my exports/user-?.csv").unwrap();
        assert_eq!((u.folder(), u.pattern()), ("my exports", "user-?.csv"));
        assert!(u.matches("user-1.csv") && !u.matches("user-10.csv"));
    }

    #[test]
    fn parses_local_folders() {
        let u = SourceUrl::parse("file:///tmp/data/").unwrap();
        assert_eq!(u.local_folder(), Some(std::path::Path::new("/tmp/data")));
        assert_eq!(u.pattern(), "*.csv");
        let u = SourceUrl::parse("file:///tmp/data/users.csv").unwrap();
        assert_eq!(u.local_folder(), Some(std::path::Path::new("/tmp/data")));
        assert_eq!(u.exact_path().unwrap().as_ref(), "users.csv");
    }

    #[test]
    fn rejects_bad_sources_with_a_reason() {
        for (raw, needle) in [
            ("bucket/file.csv", "not a URL"),
            ("https://example.com/x.csv", "unsupported scheme"),
            ("s3:///file.csv", "no bucket"),
            ("s3://Bad_Bucket/file.csv", "invalid bucket name"),
            ("s3://bucket/*/file.csv", "glob in a folder"),
            ("s3://bucket/a//b.csv", "empty"),
            ("file://server/share/x.csv", "three slashes"),
            ("file:///tmp/*/x.csv", "glob in a folder"),
        ] {
            let e = SourceUrl::parse(raw).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config);
            assert!(e.message().contains(needle), "{raw}: {e}");
        }
    }

    #[test]
    fn globs_match_names() {
        let m = |p: &str, n: &str| glob_match(p.as_bytes(), n.as_bytes());
        assert!(m("*.csv", "users.csv"));
        assert!(m("*.csv", ".csv"));
        assert!(!m("*.csv", "users.csv.bak"));
        assert!(m("users-*-*.csv", "users-2024-01.csv"));
        assert!(m("?.csv", "é.csv"));
        assert!(!m("?.csv", "ab.csv"));
        assert!(m("*", "anything"));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "aXbYbZ"));
        assert!(m("exact.csv", "exact.csv"));
        assert!(!m("exact.csv", "exact.csvx"));
    }
}
