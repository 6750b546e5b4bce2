//! The raw record source under the readers: `csv_core` over a buffer of its own, the record size cap, BOM handling, line numbers and blank-row skipping.

use std::io::{self, Read};
use std::sync::{Mutex, PoisonError};

use csv_core::ReadRecordResult;

use super::error::{RowError, RowErrorReason};
use super::fields::Fields;
use super::mapping::BUFFER_CAPACITY;
use crate::attributes::input::{Input, TextEncoding};

/// Wraps the input to keep one record's size bounded: reading fails once more
/// than `limit` bytes were read since the current record started. It also
/// drops a leading UTF-8 BOM.
struct Limited<R> {
    inner: R,
    /// Whether the start of the input was checked for a BOM.
    started: bool,
    consumed: u64,
    record_start: u64,
    limit: u64,
    tripped: bool,
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
        self.consumed += n as u64;
        Ok(n)
    }
}

/// `csv_core` parsers already built, with their delimiter, that no reader
/// uses: a reader takes one and gives it back, reset, when dropped, since
/// building one (its DFA) costs more than reading a small file. (A parser is
/// not cloned: `csv_core`'s `Clone` leaves the DFA's tables half empty.)
static PARSERS: Mutex<Vec<(u8, csv_core::Reader)>> = Mutex::new(Vec::new());

/// How many idle parsers [`PARSERS`] keeps.
const MAX_PARSERS: usize = 16;

/// A parser for `delimiter` that behaves as if never used (the `csv` crate's
/// defaults: `"` quotes, doubled to escape, CR, LF or CRLF line ends).
fn take_parser(delimiter: u8) -> csv_core::Reader {
    let mut idle = PARSERS.lock().unwrap_or_else(PoisonError::into_inner);
    match idle.iter().rposition(|(d, _)| *d == delimiter) {
        Some(i) => idle.swap_remove(i).1,
        None => csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
    }
}

/// Gives `parser` back for another reader.
fn give_back(delimiter: u8, mut parser: csv_core::Reader) {
    parser.reset();
    let mut idle = PARSERS.lock().unwrap_or_else(PoisonError::into_inner);
    if idle.len() < MAX_PARSERS {
        idle.push((delimiter, parser));
    }
}

/// CSV records from a byte stream: `csv_core` over a read buffer of its own,
/// which also tells how a record ended (see [`RecordEnd`]).
pub(super) struct Source<R> {
    input: Limited<Input<R>>,
    parser: csv_core::Reader,
    delimiter: u8,
    /// The latest chunk read is `buf[..end]`; `buf[start..end]` is not parsed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The offset of `buf[0]` in the input (after a BOM).
    buf_offset: u64,
    /// The input ended or failed.
    done: bool,
    /// The last record was ended by the end of the input, not a line end.
    ended_by_eof: bool,
}

impl<R> Drop for Source<R> {
    fn drop(&mut self) {
        give_back(self.delimiter, std::mem::take(&mut self.parser));
    }
}

impl<R: Read> Source<R> {
    /// The offset of the next byte to parse.
    fn byte(&self) -> u64 {
        self.buf_offset + self.start as u64
    }

    /// The input byte at `offset`, if it is in the latest chunk read.
    fn byte_at(&self, offset: u64) -> Option<u8> {
        let i = usize::try_from(offset.checked_sub(self.buf_offset)?).ok()?;
        self.buf.get(..self.end)?.get(i).copied()
    }

    /// Reads the next record into `record`: `false` at the end of the input
    /// (and after an error).
    fn read_record(&mut self, record: &mut Fields) -> io::Result<bool> {
        record.len = 0;
        if self.done {
            return Ok(false);
        }
        let (mut written, mut ended) = (0, 0);
        loop {
            if self.start == self.end {
                let n = match self.input.read(&mut self.buf) {
                    Ok(n) => n,
                    Err(e) => {
                        self.done = true;
                        return Err(e);
                    }
                };
                if n > 0 {
                    self.buf_offset += self.end as u64;
                    self.start = 0;
                    self.end = n;
                }
            }
            let at_eof = self.start == self.end;
            let (result, read, out, ends) = self.parser.read_record(
                &self.buf[self.start..self.end],
                &mut record.text[written..],
                &mut record.ends[ended..],
            );
            self.start += read;
            written += out;
            ended += ends;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => record.grow_text(),
                ReadRecordResult::OutputEndsFull => record.grow_ends(),
                ReadRecordResult::Record => {
                    record.len = ended;
                    self.ended_by_eof = at_eof;
                    return Ok(true);
                }
                ReadRecordResult::End => {
                    self.done = true;
                    return Ok(false);
                }
            }
        }
    }
}

/// A record source over `input`, decoded from `encoding`, whose records may
/// be up to `max_record_bytes` long.
pub(super) fn csv_reader<R: Read>(
    input: R,
    delimiter: u8,
    max_record_bytes: usize,
    encoding: TextEncoding,
) -> Source<R> {
    Source {
        input: Limited {
            inner: Input::new(input, encoding),
            started: false,
            consumed: 0,
            record_start: 0,
            // The buffer reads ahead of the record being parsed.
            limit: (max_record_bytes + BUFFER_CAPACITY) as u64,
            tripped: false,
        },
        parser: take_parser(delimiter),
        delimiter,
        buf: vec![0; BUFFER_CAPACITY],
        start: 0,
        end: 0,
        buf_offset: 0,
        done: false,
        ended_by_eof: false,
    }
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
    pub(super) fn start_line(self, record: &Fields) -> u64 {
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
    source: &mut Source<R>,
    record: &mut Fields,
    max_record_bytes: usize,
    blank_check_column: Option<usize>,
) -> std::result::Result<Option<RecordEnd>, RowError> {
    loop {
        let (start, start_line) = (source.byte(), source.parser.line());
        source.input.record_start = start;
        // A `\n` still to be consumed belongs to the previous (CRLF) line.
        let pending_newline = source.byte_at(start) == Some(b'\n');
        match source.read_record(record) {
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
                // A record the input's end closed (an unterminated quote,
                // say) did not consume a line end of its own.
                let newline = !source.ended_by_eof
                    && source
                        .byte()
                        .checked_sub(1)
                        .and_then(|last| source.byte_at(last))
                        == Some(b'\n');
                return Ok(Some(RecordEnd {
                    line: source.parser.line(),
                    newline,
                }));
            }
            Err(e) => {
                let line = start_line + u64::from(pending_newline);
                let reason = if source.input.tripped {
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

pub(super) fn header_names(record: &Fields) -> Vec<String> {
    record
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = String::from_utf8_lossy(f);
            // The input drops a BOM; be sure.
            if i == 0 {
                name.trim_start_matches('\u{feff}').to_owned()
            } else {
                name.into_owned()
            }
        })
        .collect()
}
