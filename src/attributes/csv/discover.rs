//! Sampling a CSV file's header and first rows without a mapping ([`discover_csv`]).

use std::io::Read;

use serde::{Deserialize, Serialize};

use super::fields::Fields;
use super::mapping::DEFAULT_MAX_RECORD_BYTES;
use super::source::{Source, csv_reader, header_names, next_record};
use crate::attributes::input::TextEncoding;
use crate::{Error, Result};

/// The header and first rows of a CSV file, for a set-up wizard's data-discovery step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvSample {
    /// The header row.
    pub headers: Vec<String>,
    /// Up to the requested number of data rows, as text (invalid UTF-8 replaced).
    pub rows: Vec<Vec<String>>,
    /// True if the file has more rows than were sampled.
    pub more: bool,
}

/// Reads the header and up to `sample_rows` data rows (blank lines skipped),
/// without a mapping. Reads no further than one row past the sample.
///
/// ```
/// use switchboard::attributes::discover_csv;
/// let sample = discover_csv("id,plan\n1,basic\n2,premium\n".as_bytes(), 1).unwrap();
/// assert_eq!(sample.headers, ["id", "plan"]);
/// assert_eq!(sample.rows, [["1", "basic"]]);
/// assert!(sample.more);
/// ```
pub fn discover_csv(input: impl Read, sample_rows: usize) -> Result<CsvSample> {
    discover_csv_with(input, sample_rows, b',')
}

/// [`discover_csv`] with another delimiter.
pub fn discover_csv_with(input: impl Read, sample_rows: usize, delimiter: u8) -> Result<CsvSample> {
    discover_csv_encoded(input, sample_rows, delimiter, TextEncoding::Utf8)
}

/// [`discover_csv_with`] for a file in another text encoding.
pub fn discover_csv_encoded(
    input: impl Read,
    sample_rows: usize,
    delimiter: u8,
    encoding: TextEncoding,
) -> Result<CsvSample> {
    let mut reader = csv_reader(input, delimiter, DEFAULT_MAX_RECORD_BYTES, encoding);
    let mut record = Fields::default();
    let read = |reader: &mut Source<_>, record: &mut Fields| {
        next_record(reader, record, DEFAULT_MAX_RECORD_BYTES, None)
            .map_err(|e| Error::invalid_input(format!("cannot read the CSV file: {e}")))
    };
    if read(&mut reader, &mut record)?.is_none() {
        return Err(Error::invalid_input("the CSV file is empty: no header row"));
    }
    let headers = header_names(&record);
    let mut rows = Vec::new();
    let mut more = false;
    while read(&mut reader, &mut record)?.is_some() {
        if rows.len() == sample_rows {
            more = true;
            break;
        }
        rows.push(
            record
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect(),
        );
    }
    Ok(CsvSample {
        headers,
        rows,
        more,
    })
}
