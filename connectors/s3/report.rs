//! A run's full error report: every rejected row spooled to a temporary file during validation, then uploaded beside the source as `<folder>/<report folder>/run-<id>.csv`.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom};

use object_store::path::Path as ObjectPath;
use object_store::{PutPayload, WriteMultipart};

use super::client::Bucket;
use crate::attributes::{ErrorReport, RowError};
use crate::{Error, ErrorKind, Result};

/// Bytes per uploaded part (S3's minimum part size is 5 MiB).
const PART_BYTES: usize = 5 * 1024 * 1024;

/// Parts in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// Every rejected row of one file, spooled to an unnamed temporary file.
pub(crate) struct ReportSpool {
    report: ErrorReport<BufWriter<File>>,
}

impl ReportSpool {
    /// A spool in `dir` (the connector's spool directory).
    pub(crate) fn create(dir: &std::path::Path) -> Result<Self> {
        let file = tempfile::tempfile_in(dir).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "cannot create the error-report file in {}: {e}; set a writable spool_dir",
                    dir.display()
                ),
            )
            .with_source(e)
        })?;
        Ok(ReportSpool {
            report: ErrorReport::new(BufWriter::new(file))?,
        })
    }

    /// Spools one rejected row.
    pub(crate) fn push(&mut self, error: &RowError) -> Result<()> {
        self.report.push(error)
    }

    /// The rows spooled.
    pub(crate) fn rows(&self) -> u64 {
        self.report.rows()
    }

    /// The finished report, rewound for reading.
    pub(crate) fn finish(self) -> Result<File> {
        let mut file = self.report.finish()?.into_inner().map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("writing the error report failed: {}", e.error()),
            )
        })?;
        file.seek(SeekFrom::Start(0))?;
        Ok(file)
    }
}

/// Where run `run_id`'s error report goes: `<source folder>/<folder>/run-<run_id>.csv`.
pub(crate) fn report_path(bucket: &Bucket, folder: &str, run_id: i64) -> ObjectPath {
    bucket
        .source
        .folder_path()
        .child(folder)
        .child(format!("run-{run_id}.csv").as_str())
}

/// Reads up to `PART_BYTES` from `file` on a blocking thread.
async fn read_part(mut file: File) -> Result<(File, Vec<u8>)> {
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(PART_BYTES);
        (&mut file)
            .take(PART_BYTES as u64)
            .read_to_end(&mut buf)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("reading the error report failed: {e}"),
                )
            })?;
        Ok((file, buf))
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Io, format!("error-report task failed: {e}")))?
}

/// Uploads the report to `path`, streaming: at most `PARTS_IN_FLIGHT + 1`
/// parts of 5 MiB in memory, whatever its size. Returns its URL.
pub(crate) async fn upload(bucket: &Bucket, path: &ObjectPath, file: File) -> Result<String> {
    let put_failed = |e: object_store::Error| {
        Error::new(
            ErrorKind::Platform,
            format!(
                "the error report could not be written to {}: {e}",
                bucket.url_of(path)
            ),
        )
        .with_source(e)
    };
    let (mut file, first) = read_part(file).await?;
    if first.len() < PART_BYTES {
        bucket
            .store
            .put(path, PutPayload::from(first))
            .await
            .map_err(put_failed)?;
        return Ok(bucket.url_of(path));
    }
    let upload = bucket.store.put_multipart(path).await.map_err(put_failed)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let mut part = first;
    loop {
        if part.is_empty() {
            break;
        }
        if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
            let _ = writer.abort().await;
            return Err(put_failed(e));
        }
        writer.put(part.into());
        let next = match read_part(file).await {
            Ok(next) => next,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e);
            }
        };
        (file, part) = next;
    }
    writer.finish().await.map_err(put_failed)?;
    Ok(bucket.url_of(path))
}
