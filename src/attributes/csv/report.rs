//! [`ErrorReport`]: every rejected row of an import written as CSV (`line,user_id,kind,reason`), streaming.

use std::io::Write;

use super::error::RowError;
use crate::{Error, ErrorKind, Result};

/// Writes every rejected row of an import as a CSV file an admin can download,
/// with the columns `line,user_id,kind,reason`: the 1-based line the row starts
/// on, its user-id cell as read (empty if blank), the reason's short name
/// ([`RowErrorReason::kind`](super::RowErrorReason::kind)) and the reason in words.
///
/// Streaming: nothing is kept in memory but the writer's buffer, whatever the
/// number of rows. A cell that starts with `=`, `+`, `-`, `@`, a tab or a
/// carriage return is written with a leading `'`, so a spreadsheet opening the
/// report never runs a cell of the imported file as a formula.
///
/// ```
/// use switchboard::attributes::{CsvMapping, ErrorReport, read_csv};
/// let csv = "id,plan\n,basic\nu2,pro,extra\n=cmd,x,y\n";
/// let mut report = ErrorReport::new(Vec::new()).unwrap();
/// for row in read_csv(csv.as_bytes(), &CsvMapping::new("id").attribute("plan", "plan")).unwrap() {
///     if let Err(error) = row {
///         report.push(&error).unwrap();
///     }
/// }
/// assert_eq!(report.rows(), 3);
/// let text = String::from_utf8(report.finish().unwrap()).unwrap();
/// assert_eq!(text.lines().next(), Some("line,user_id,kind,reason"));
/// assert!(text.contains("3,u2,field_count,\"expected 2 fields, found 3\""));
/// assert!(text.contains("4,'=cmd,field_count,"));
/// ```
pub struct ErrorReport<W: Write> {
    writer: csv::Writer<W>,
    rows: u64,
}

impl<W: Write> std::fmt::Debug for ErrorReport<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorReport")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

fn failed(e: csv::Error) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("writing the error report failed: {e}"),
    )
}

/// `cell`, defused for spreadsheets (see [`ErrorReport`]).
fn cell(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

impl<W: Write> ErrorReport<W> {
    /// A report writing to `out`; writes the header row.
    pub fn new(out: W) -> Result<Self> {
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(out);
        writer
            .write_record(["line", "user_id", "kind", "reason"])
            .map_err(failed)?;
        Ok(ErrorReport { writer, rows: 0 })
    }

    /// Writes one rejected row.
    pub fn push(&mut self, error: &RowError) -> Result<()> {
        let line = error.line.to_string();
        let reason = error.reason.to_string();
        self.writer
            .write_record([
                line.as_str(),
                &cell(error.user_id.as_deref().unwrap_or_default()),
                error.reason.kind(),
                &cell(&reason),
            ])
            .map_err(failed)?;
        self.rows += 1;
        Ok(())
    }

    /// The rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Flushes the report and returns the writer.
    pub fn finish(self) -> Result<W> {
        self.writer.into_inner().map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("writing the error report failed: {}", e.error()),
            )
        })
    }
}
