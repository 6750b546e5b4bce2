//! Bridges an object-store byte stream into a blocking `std::io::Read` through a bounded channel, and sniffs files that are not CSV.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

/// Chunks in flight between the download task and the reader: memory stays at
/// about this many HTTP body chunks, whatever the object's size.
const CHANNEL_DEPTH: usize = 4;

/// Where a failed stream's error is left for the async side to map.
pub(crate) type FailureSlot = Arc<Mutex<Option<object_store::Error>>>;

/// A blocking reader over an object's byte stream.
///
/// A task pulls the stream and sends chunks through a bounded channel; `read`
/// takes them on a blocking thread. Dropping the reader stops the task.
pub(crate) struct StreamReader {
    rx: mpsc::Receiver<object_store::Result<Bytes>>,
    chunk: Bytes,
    done: bool,
    failure: FailureSlot,
    task: tokio::task::JoinHandle<()>,
}

impl StreamReader {
    /// Starts pulling `stream` on the current runtime. If no chunk arrives for
    /// `idle_timeout`, reading fails with a timeout.
    pub(crate) fn spawn(
        mut stream: BoxStream<'static, object_store::Result<Bytes>>,
        idle_timeout: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let task = tokio::spawn(async move {
            loop {
                let item = match tokio::time::timeout(idle_timeout, stream.next()).await {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(_) => Err(object_store::Error::Generic {
                        store: "S3",
                        source: Box::new(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("the download timed out: no data for {idle_timeout:?}"),
                        )),
                    }),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        StreamReader {
            rx,
            chunk: Bytes::new(),
            done: false,
            failure: Arc::new(Mutex::new(None)),
            task,
        }
    }

    /// The slot that holds the stream's error after a failed `read`.
    pub(crate) fn failure(&self) -> FailureSlot {
        Arc::clone(&self.failure)
    }

    fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        match self.rx.blocking_recv() {
            Some(Ok(bytes)) => Ok(Some(bytes)),
            Some(Err(e)) => {
                self.done = true;
                let message = e.to_string();
                if let Ok(mut slot) = self.failure.lock() {
                    *slot = Some(e);
                }
                Err(io::Error::other(message))
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.next_chunk()? {
                Some(bytes) => self.chunk = bytes,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A reader that keeps a copy of the first `limit` bytes read through it (for
/// checking a discovered file's header against the mapping).
pub(crate) struct Capture<R> {
    pub(crate) inner: R,
    pub(crate) captured: Vec<u8>,
    pub(crate) limit: usize,
}

impl<R: Read> Read for Capture<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let room = self.limit.saturating_sub(self.captured.len());
        self.captured.extend_from_slice(&buf[..n.min(room)]);
        Ok(n)
    }
}

/// How many leading bytes are inspected to tell whether a file is CSV.
pub(crate) const SNIFF_BYTES: u64 = 4096;

/// Reads the first [`SNIFF_BYTES`] of `reader` and returns them with a reader
/// that yields the whole input again (the prefix, then the rest).
pub(crate) fn with_prefix<R: Read>(mut reader: R) -> io::Result<(Vec<u8>, impl Read)> {
    let mut prefix = Vec::with_capacity(SNIFF_BYTES as usize);
    (&mut reader).take(SNIFF_BYTES).read_to_end(&mut prefix)?;
    Ok((prefix.clone(), Read::chain(io::Cursor::new(prefix), reader)))
}

/// Says why the first bytes of a file show it is not a CSV file, if they do.
pub(crate) fn not_csv_reason(prefix: &[u8]) -> Option<&'static str> {
    const SIGNATURES: &[(&[u8], &str)] = &[
        (
            b"PK\x03\x04",
            "it is a ZIP archive (an Excel .xlsx workbook?); export the sheet as CSV",
        ),
        (b"PAR1", "it is a Parquet file; export the data as CSV"),
        (b"%PDF", "it is a PDF document; export the data as CSV"),
        (
            b"\xd0\xcf\x11\xe0",
            "it is an old Excel .xls workbook; export the sheet as CSV",
        ),
        (
            b"BZh",
            "it is bzip2-compressed; upload the CSV uncompressed",
        ),
        (
            b"\xfd7zXZ",
            "it is xz-compressed; upload the CSV uncompressed",
        ),
    ];
    for (magic, reason) in SIGNATURES {
        if prefix.starts_with(magic) {
            return Some(reason);
        }
    }
    // Gzip (`.csv.gz`) and UTF-16 text with a BOM are read (see
    // `attributes::TextEncoding`); their bytes are not plain text.
    if prefix.starts_with(b"\x1f\x8b")
        || prefix.starts_with(b"\xff\xfe")
        || prefix.starts_with(b"\xfe\xff")
    {
        return None;
    }
    if prefix.contains(&0) {
        return Some("it holds binary data (NUL bytes); export the data as UTF-8 CSV");
    }
    None
}

/// A hint when the file's first line seems to use another delimiter than `delimiter`.
pub(crate) fn delimiter_hint(prefix: &[u8], delimiter: u8) -> Option<String> {
    let line = prefix.split(|&b| b == b'\n').next().unwrap_or_default();
    let count = |d: u8| line.iter().filter(|&&b| b == d).count();
    if count(delimiter) > 0 {
        return None;
    }
    [b';', b'\t', b'|', b',']
        .into_iter()
        .filter(|&d| d != delimiter)
        .map(|d| (count(d), d))
        .max()
        .filter(|(n, _)| *n > 0)
        .map(|(_, d)| {
            let name = match d {
                b'\t' => "tab".to_owned(),
                other => format!("{:?}", other as char),
            };
            format!("the header looks {name}-separated: set the delimiter to {name}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_files_that_are_not_csv() {
        assert_eq!(not_csv_reason(b"\x1f\x8b\x08\x00"), None, "gzip is read");
        assert_eq!(not_csv_reason(b"\xff\xfei\0d\0"), None, "UTF-16 is read");
        assert!(not_csv_reason(b"PK\x03\x04rest").unwrap().contains("xlsx"));
        assert!(
            not_csv_reason(b"id,plan\n1,\0\n")
                .unwrap()
                .contains("binary")
        );
        assert_eq!(not_csv_reason(b"id,plan\n1,basic\n"), None);
        assert_eq!(not_csv_reason(b""), None);
    }

    #[test]
    fn hints_at_the_delimiter() {
        assert!(
            delimiter_hint(b"Email;Plan;Seats\n", b',')
                .unwrap()
                .contains("';'")
        );
        assert!(
            delimiter_hint(b"Email\tPlan\n", b',')
                .unwrap()
                .contains("tab")
        );
        assert_eq!(delimiter_hint(b"Email,Plan\n", b','), None);
        assert_eq!(delimiter_hint(b"Email\n", b','), None);
    }

    #[test]
    fn prefix_reader_yields_everything() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let (prefix, mut rest) = with_prefix(&data[..]).unwrap();
        assert_eq!(prefix, &data[..SNIFF_BYTES as usize]);
        let mut all = Vec::new();
        rest.read_to_end(&mut all).unwrap();
        assert_eq!(all, data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_chunks_into_a_blocking_reader() {
        let chunks: Vec<object_store::Result<Bytes>> = (0..100)
            .map(|i| Ok(Bytes::from(format!("chunk {i:03}\n"))))
            .collect();
        let mut reader = StreamReader::spawn(
            futures::stream::iter(chunks).boxed(),
            Duration::from_secs(5),
        );
        let text = tokio::task::spawn_blocking(move || {
            let mut out = String::new();
            reader.read_to_string(&mut out).map(|_| out)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(text.lines().count(), 100);
        assert!(text.starts_with("chunk 000\nchunk 001\n"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_download_times_out() {
        let stalled = futures::stream::iter(vec![Ok(Bytes::from_static(b"id\n"))])
            .chain(futures::stream::pending())
            .boxed();
        let mut reader = StreamReader::spawn(stalled, Duration::from_millis(50));
        let slot = reader.failure();
        let result = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            reader.read_to_end(&mut out)
        })
        .await
        .unwrap();
        assert!(result.unwrap_err().to_string().contains("timed out"));
        assert!(slot.lock().unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keeps_the_stream_error() {
        let items: Vec<object_store::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"id\n")),
            Err(object_store::Error::NotImplemented),
        ];
        let mut reader =
            StreamReader::spawn(futures::stream::iter(items).boxed(), Duration::from_secs(5));
        let slot = reader.failure();
        let result = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            reader.read_to_end(&mut out)
        })
        .await
        .unwrap();
        assert!(result.is_err());
        assert!(matches!(
            slot.lock().unwrap().take(),
            Some(object_store::Error::NotImplemented)
        ));
    }
}
