//! The raw record source under the readers: the record size cap, BOM handling, line numbers and blank-row skipping.

use std::io::{self, Read};

use csv::ByteRecord;

use super::error::{RowError, RowErrorReason};
use super::mapping::BUFFER_CAPACITY;
use crate::attributes::input::{Input, TextEncoding};

/// Wraps the input to keep one record's size bounded: reading fails once more
/// than `limit` bytes were read since the current record started. It also keeps
/// the latest chunk read, to tell how a record ended (see [`RecordEnd`]), and
/// drops a leading UTF-8 BOM (the csv crate strips one only when its first read
/// returns more than the BOM).
pub(super) struct Limited<R> {
    inner: R,
    /// Whether the start of the input was checked for a BOM.
    started: bool,
    consumed: u64,
    record_start: u64,
    limit: u64,
    tripped: bool,
    /// The latest non-empty chunk handed to the reader's buffer, and its offset.
    chunk: Vec<u8>,
    chunk_start: u64,
}

impl<R> Limited<R> {
    /// The input byte at `offset`, if it is in the latest chunk.
    fn byte_at(&self, offset: u64) -> Option<u8> {
        let i = usize::try_from(offset.checked_sub(self.chunk_start)?).ok()?;
        self.chunk.get(i).copied()
    }
}

impl<R: Read> Limited<R> {
    /// The first read: at least the first 3 bytes (or all there is), without a BOM.
    fn read_start(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        const BOM: &[u8] = b"\xef\xbb\xbf";
        if buf.len() < BOM.len() {
            return self.inner.read(buf);
        }
        let mut got = 0;
        while got < BOM.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if buf[..got].starts_with(BOM) {
            buf.copy_within(BOM.len()..got, 0);
            got -= BOM.len();
            if got == 0 {
                // Only the BOM so far: hand out what follows it.
                return self.inner.read(buf);
            }
        }
        Ok(got)
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.consumed.saturating_sub(self.record_start) > self.limit {
            self.tripped = true;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "record too long",
            ));
        }
        let n = if self.started {
            self.inner.read(buf)?
        } else {
            self.started = true;
            self.read_start(buf)?
        };
        if n > 0 {
            self.chunk.clear();
            self.chunk.extend_from_slice(&buf[..n]);
            self.chunk_start = self.consumed;
        }
        self.consumed += n as u64;
        Ok(n)
    }
}

pub(super) fn csv_reader<R: Read>(
    input: R,
    delimiter: u8,
    max_record_bytes: usize,
    encoding: TextEncoding,
) -> csv::Reader<Limited<Input<R>>> {
    let limited = Limited {
        inner: Input::new(input, encoding),
        started: false,
        consumed: 0,
        record_start: 0,
        // The reader's buffer reads ahead of the record being parsed.
        limit: (max_record_bytes + BUFFER_CAPACITY) as u64,
        tripped: false,
        chunk: Vec::with_capacity(BUFFER_CAPACITY),
        chunk_start: 0,
    };
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .buffer_capacity(BUFFER_CAPACITY)
        .from_reader(limited)
}

/// Where a record ended, from which the line it started on follows.
///
/// The reader counts every `\n` it consumes. A record ending in `\n` (LF files)
/// has consumed it; one ending in `\r` (CRLF files) has not yet — the `\n` is
/// consumed with any blank lines before the next record. So the record started
/// on `line - newlines inside the record - (1 if it ended in \n)`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RecordEnd {
    /// The reader's line count after the record.
    line: u64,
    /// Whether the record's terminator was a consumed `\n`.
    newline: bool,
}

impl RecordEnd {
    /// The 1-based line `record` (the record that ended here) started on.
    pub(super) fn start_line(self, record: &ByteRecord) -> u64 {
        let text = record.as_slice();
        // Line breaks inside a record are rare (quoted values only): find one first.
        let inner = if text.contains(&b'\n') {
            text.iter().filter(|&&b| b == b'\n').count() as u64
        } else {
            0
        };
        self.line
            .saturating_sub(inner)
            .saturating_sub(u64::from(self.newline))
            .max(1)
    }
}

/// Reads the next record that is not blank (every field empty or spaces). Marks the
/// record start for the size cap. Errors are turned into fatal row errors.
pub(super) fn next_record<R: Read>(
    reader: &mut csv::Reader<Limited<R>>,
    record: &mut ByteRecord,
    max_record_bytes: usize,
    blank_check_column: Option<usize>,
) -> std::result::Result<Option<RecordEnd>, RowError> {
    loop {
        let start = reader.position().clone();
        let limited = reader.get_mut();
        limited.record_start = start.byte();
        // A `\n` still to be consumed belongs to the previous (CRLF) line.
        let pending_newline = limited.byte_at(start.byte()) == Some(b'\n');
        match reader.read_byte_record(record) {
            Ok(false) => return Ok(None),
            Ok(true) => {
                // Cheap path: a non-blank user id means the record is not blank.
                let maybe_blank = match blank_check_column.and_then(|c| record.get(c)) {
                    Some(field) => field.iter().all(u8::is_ascii_whitespace),
                    None => true,
                };
                if maybe_blank && record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
                    continue;
                }
                let end = reader.position();
                let newline = end
                    .byte()
                    .checked_sub(1)
                    .and_then(|last| reader.get_ref().byte_at(last))
                    == Some(b'\n');
                return Ok(Some(RecordEnd {
                    line: end.line(),
                    newline,
                }));
            }
            Err(e) => {
                let line = start.line() + u64::from(pending_newline);
                let reason = if reader.get_ref().tripped {
                    RowErrorReason::TooLong {
                        limit: max_record_bytes,
                    }
                } else {
                    RowErrorReason::Read {
                        message: e.to_string(),
                    }
                };
                return Err(RowError {
                    line,
                    user_id: None,
                    reason,
                });
            }
        }
    }
}

pub(super) fn header_names(record: &ByteRecord) -> Vec<String> {
    record
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = String::from_utf8_lossy(f);
            // csv-core strips a BOM only when it arrives in one read; be sure.
            if i == 0 {
                name.trim_start_matches('\u{feff}').to_owned()
            } else {
                name.into_owned()
            }
        })
        .collect()
}
