//! What comes before CSV parsing: gzip detection, text encodings (UTF-8, Windows-1252/Latin-1, UTF-16 with a BOM) and CR-only line ends.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

/// The text encoding of a CSV file.
///
/// Whatever is chosen, a UTF-16 byte-order mark is honoured (such a file
/// cannot be UTF-8 or Windows-1252 text anyway), and a UTF-8 BOM is dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextEncoding {
    /// UTF-8 (the default): bytes that are not UTF-8 reject their row.
    #[default]
    Utf8,
    /// Windows-1252, the Western European "ANSI" code page Excel writes; also
    /// what files labelled ISO-8859-1 / Latin-1 contain in practice.
    Windows1252,
    /// UTF-16 (little-endian unless a BOM says otherwise).
    Utf16,
    /// Detected: a BOM decides; otherwise UTF-8 if the start of the file is
    /// valid UTF-8, else Windows-1252.
    Auto,
}

/// How many bytes are looked at to detect gzip and BOMs.
const SNIFF: usize = 4;
/// How many bytes `Auto` looks at to tell UTF-8 from Windows-1252.
const DETECT: usize = 64 * 1024;

/// Reads at least `want` bytes (or all there is) into a buffer.
fn read_at_least<R: Read>(inner: &mut R, want: usize) -> io::Result<Vec<u8>> {
    // One ordinary-sized read (a `BufReader`'s 8 KiB) usually brings it all, and
    // no more reads than needed; a small file costs no large zeroed buffer.
    let mut buf = vec![0u8; want.max(8 * 1024)];
    let mut got = 0;
    while got < want {
        match inner.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Bytes already read, then the rest of the input.
type Prefixed<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// The raw bytes: as they are, or gunzipped (`.csv.gz`, detected by its magic bytes).
enum Raw<R> {
    Plain(Prefixed<R>),
    Gzip(Box<flate2::read::MultiGzDecoder<Prefixed<R>>>),
}

impl<R: Read> Read for Raw<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Raw::Plain(r) => r.read(buf),
            Raw::Gzip(r) => r.read(buf).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the file is gzip-compressed but cannot be decompressed (corrupt or truncated): {e}"),
                )
            }),
        }
    }
}

/// Decodes to UTF-8 (or passes UTF-8 through).
enum Text<R> {
    Utf8(Prefixed<Raw<R>>),
    Decoding {
        inner: Raw<R>,
        decoder: encoding_rs::Decoder,
        input: Vec<u8>,
        start: usize,
        end: usize,
        eof: bool,
        output: Vec<u8>,
        out_start: usize,
    },
}

impl<R: Read> Text<R> {
    fn decoding(inner: Raw<R>, prefix: Vec<u8>, decoder: encoding_rs::Decoder) -> Text<R> {
        let end = prefix.len();
        let mut input = prefix;
        input.resize(end.max(16 * 1024), 0);
        Text::Decoding {
            inner,
            decoder,
            input,
            start: 0,
            end,
            eof: false,
            output: Vec::with_capacity(48 * 1024),
            out_start: 0,
        }
    }
}

impl<R: Read> Read for Text<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Text::Decoding {
            inner,
            decoder,
            input,
            start,
            end,
            eof,
            output,
            out_start,
        } = self
        else {
            let Text::Utf8(r) = self else { return Ok(0) };
            return r.read(buf);
        };
        loop {
            if *out_start < output.len() {
                let n = buf.len().min(output.len() - *out_start);
                buf[..n].copy_from_slice(&output[*out_start..*out_start + n]);
                *out_start += n;
                return Ok(n);
            }
            if *eof && *start == *end {
                return Ok(0);
            }
            if *start == *end && !*eof {
                *start = 0;
                *end = 0;
                let n = loop {
                    match inner.read(&mut input[..]) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                };
                *end = n;
                *eof = n == 0;
            }
            output.clear();
            *out_start = 0;
            let want = decoder
                .max_utf8_buffer_length(*end - *start)
                .unwrap_or(64 * 1024)
                .max(16);
            output.resize(want, 0);
            let (_, read, written, _) =
                decoder.decode_to_utf8(&input[*start..*end], &mut output[..], *eof);
            *start += read;
            output.truncate(written);
            if *eof && *start == *end && output.is_empty() {
                return Ok(0);
            }
        }
    }
}

/// Turns every lone `\r` (old Mac files, or a stray one in any file) into
/// `\n`, so records end where lines end and lines are numbered the same way
/// (`\r\n` passes through). A lone `\r` inside a quoted value becomes `\n`
/// too: a line break either way.
struct LoneCr<R> {
    inner: R,
    /// The last read ended in `\r`, held back until the next byte tells
    /// whether it is a lone one.
    held: bool,
    /// One byte read to decide a held `\r` when the caller's buffer had room
    /// for only one byte.
    stash: Option<u8>,
}

impl<R> LoneCr<R> {
    fn new(inner: R) -> Self {
        LoneCr {
            inner,
            held: false,
            stash: None,
        }
    }
}

impl<R: Read> Read for LoneCr<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            // A held `\r` goes first, once the next byte is known.
            let start = usize::from(self.held);
            if buf.len() <= start {
                let mut one = [0u8];
                let n = self.inner.read(&mut one)?;
                if n == 1 {
                    self.stash = Some(one[0]);
                }
                buf[0] = if n == 1 && one[0] == b'\n' {
                    b'\r'
                } else {
                    b'\n'
                };
                self.held = false;
                return Ok(1);
            }
            let n = match self.stash.take() {
                Some(b) => {
                    buf[start] = b;
                    1
                }
                None => self.inner.read(&mut buf[start..])?,
            };
            if n == 0 {
                if self.held {
                    self.held = false;
                    buf[0] = b'\n';
                    return Ok(1);
                }
                return Ok(0);
            }
            let mut end = start + n;
            if self.held {
                buf[0] = if buf[1] == b'\n' { b'\r' } else { b'\n' };
                self.held = false;
            }
            let mut from = start;
            while let Some(at) = memchr::memchr(b'\r', &buf[from..end - 1]) {
                let at = from + at;
                if buf[at + 1] != b'\n' {
                    buf[at] = b'\n';
                }
                from = at + 1;
            }
            if buf[end - 1] == b'\r' {
                self.held = true;
                end -= 1;
            }
            if end > 0 {
                return Ok(end);
            }
        }
    }
}

/// The input as UTF-8 text with `\n` or `\r\n` line ends: gunzipped if it is
/// gzip, decoded from `encoding`.
pub(crate) struct Input<R> {
    state: State<R>,
}

enum State<R> {
    Start(Option<(R, TextEncoding)>),
    Ready(LoneCr<Text<R>>),
}

impl<R: Read> Input<R> {
    pub(crate) fn new(inner: R, encoding: TextEncoding) -> Self {
        Input {
            state: State::Start(Some((inner, encoding))),
        }
    }

    fn open(mut inner: R, encoding: TextEncoding) -> io::Result<LoneCr<Text<R>>> {
        let magic = read_at_least(&mut inner, SNIFF)?;
        let prefixed = io::Cursor::new(magic.clone()).chain(inner);
        let mut raw = if magic.starts_with(&[0x1f, 0x8b]) {
            Raw::Gzip(Box::new(flate2::read::MultiGzDecoder::new(prefixed)))
        } else {
            Raw::Plain(prefixed)
        };
        let sniff = if matches!(encoding, TextEncoding::Auto) {
            DETECT
        } else {
            SNIFF
        };
        let head = read_at_least(&mut raw, sniff)?;
        let bom = encoding_rs::Encoding::for_bom(&head);
        let chosen = match (bom, encoding) {
            (Some((enc, _)), _) if enc != encoding_rs::UTF_8 => Some(enc),
            (Some(_), _) => None,
            (None, TextEncoding::Utf8) => None,
            (None, TextEncoding::Windows1252) => Some(encoding_rs::WINDOWS_1252),
            (None, TextEncoding::Utf16) => Some(encoding_rs::UTF_16LE),
            (None, TextEncoding::Auto) => match std::str::from_utf8(&head) {
                Ok(_) => None,
                // A multi-byte character cut at the end of the sample is fine.
                Err(e) if e.error_len().is_none() => None,
                Err(_) => Some(encoding_rs::WINDOWS_1252),
            },
        };
        let text = match chosen {
            // A UTF-8 BOM is left for the CSV layer, which drops it.
            None => Text::Utf8(io::Cursor::new(head).chain(raw)),
            Some(enc) => Text::decoding(raw, head, enc.new_decoder_with_bom_removal()),
        };
        Ok(LoneCr::new(text))
    }
}

impl<R: Read> Read for Input<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let State::Start(start) = &mut self.state {
            let Some((inner, encoding)) = start.take() else {
                return Ok(0);
            };
            self.state = State::Ready(Self::open(inner, encoding)?);
        }
        match &mut self.state {
            State::Ready(r) => r.read(buf),
            State::Start(_) => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8], encoding: TextEncoding) -> String {
        let mut out = String::new();
        Input::new(bytes, encoding)
            .read_to_string(&mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        out
    }

    #[test]
    fn decodes_windows_1252_and_utf16() {
        assert_eq!(text(b"caf\xe9\n", TextEncoding::Windows1252), "café\n");
        assert_eq!(text(b"caf\xe9 \x80\n", TextEncoding::Auto), "café €\n");
        assert_eq!(text("café\n".as_bytes(), TextEncoding::Auto), "café\n");
        let mut utf16 = vec![0xff, 0xfe];
        for u in "a,ü\n".encode_utf16() {
            utf16.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(text(&utf16, TextEncoding::Utf8), "a,ü\n");
    }

    #[test]
    fn gunzips_and_fixes_lone_carriage_returns() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"a\rb\r").unwrap_or_else(|e| panic!("{e}"));
        let bytes = gz.finish().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text(&bytes, TextEncoding::Utf8), "a\nb\n");
        assert_eq!(text(b"a\r\nb\r\n", TextEncoding::Utf8), "a\r\nb\r\n");
        // Mixed line ends: each lone `\r` is a line end, `\r\n` stays.
        assert_eq!(
            text(b"a\nb\rc\r\nd\r", TextEncoding::Utf8),
            "a\nb\nc\r\nd\n"
        );
    }

    /// Hands out at most `sizes[i % len]` bytes per read.
    struct Chunked<'a> {
        data: &'a [u8],
        sizes: Vec<usize>,
        reads: usize,
    }

    impl Read for Chunked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let size = self.sizes[self.reads % self.sizes.len()];
            self.reads += 1;
            let n = size.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    proptest::proptest! {
        /// However the input is cut into reads and however small the
        /// caller's buffers, every lone `\r` (and only those) becomes `\n`.
        #[test]
        fn lone_carriage_returns_become_line_feeds_across_any_reads(
            data in proptest::collection::vec(proptest::sample::select(b"\r\na".to_vec()), 0..64),
            sizes in proptest::collection::vec(1usize..5, 1..4),
            caller in proptest::collection::vec(1usize..5, 1..4),
        ) {
            let expected: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, &b)| if b == b'\r' && data.get(i + 1) != Some(&b'\n') { b'\n' } else { b })
                .collect();
            let mut reader = LoneCr::new(Chunked { data: &data, sizes, reads: 0 });
            let mut out = Vec::new();
            let mut buf = [0u8; 8];
            for i in 0.. {
                let want = caller[i % caller.len()];
                let n = reader.read(&mut buf[..want]).unwrap_or_else(|e| panic!("{e}"));
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            proptest::prop_assert_eq!(out, expected);
        }
    }
}
