//! Call recordings: the hang-up step uploads the recording, attaches it to the call's ticket as an internal note and optionally archives it under `RecordedCalls/`.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::api::{MAX_UPLOAD_BYTES, UPLOAD_TOKEN_TTL};
use super::call_types::Recording;
use super::calls::{CallFlow, StepResult, local, lock};
use super::errors::FailureClass;
use super::models::{Comment, TicketUpdate};

fn content_type_for(filename: &str) -> &'static str {
    let ext = filename
        .rsplit('.')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" | "oga" => "audio/ogg",
        "m4a" | "mp4" => "audio/mp4",
        "webm" => "audio/webm",
        _ => "application/octet-stream",
    }
}

impl CallFlow {
    /// The call ended: uploads the recording (if any) and attaches it to the
    /// call's ticket as an internal note; archives it if configured. Returns
    /// whether a recording was attached (false when there is none or the call
    /// is not tracked). A recording for a call whose ticket does not exist yet
    /// (its answer step is still being retried) is a temporary failure.
    pub async fn hangup(
        &self,
        call_id: &str,
        _at: DateTime<Utc>,
        recording: Option<Recording>,
    ) -> StepResult<bool> {
        let i = &self.inner;
        let Some(recording) = recording else {
            return Ok(false);
        };
        enum Known {
            Ticket(u64, Option<String>),
            NoTicket,
            Untracked,
        }
        let known = {
            let calls = lock(&i.calls);
            match calls.get(call_id) {
                None => Known::Untracked,
                Some(c) if c.recording_attached => return Ok(true),
                Some(c) => match c
                    .answer
                    .as_ref()
                    .map(|a| a.ticket_id)
                    .or(c.recovered_ticket)
                {
                    // Keep a 5-minute margin on the token's 60-minute validity.
                    Some(t) => Known::Ticket(
                        t,
                        c.upload
                            .as_ref()
                            .filter(|(_, at)| {
                                at.elapsed() < UPLOAD_TOKEN_TTL - Duration::from_secs(300)
                            })
                            .map(|(t, _)| t.clone()),
                    ),
                    None => Known::NoTicket,
                },
            }
        };
        let (ticket_id, reuse) = match known {
            Known::Ticket(t, reuse) => (t, reuse),
            // The answer step may still be retrying, or ran before a restart.
            Known::NoTicket => (self.recover_ticket(call_id, "hangup").await?, None),
            Known::Untracked => {
                if lock(&i.ignored).contains_key(call_id) {
                    return Ok(false);
                }
                match self.existing_ticket(call_id).await? {
                    Some(t) => (t.id, None),
                    None => return Ok(false),
                }
            }
        };
        let (filename, content_type, data) = match recording {
            Recording::Bytes {
                filename,
                content_type,
                data,
            } => (filename, content_type, data),
            Recording::Path(path) => {
                let len = std::fs::metadata(&path)
                    .map_err(|e| {
                        local(
                            FailureClass::Permanent,
                            "read recording",
                            format!("{}: {e}", path.display()),
                        )
                    })?
                    .len();
                if len > MAX_UPLOAD_BYTES {
                    return Err(local(
                        FailureClass::Permanent,
                        "upload",
                        format!(
                            "the recording is {len} bytes; Zendesk attachments are limited to 50 MB"
                        ),
                    ));
                }
                let data = std::fs::read(&path).map_err(|e| {
                    local(
                        FailureClass::Temporary,
                        "read recording",
                        format!("{}: {e}", path.display()),
                    )
                })?;
                let filename = path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "recording".to_owned());
                let ct = content_type_for(&filename).to_owned();
                (filename, ct, Bytes::from(data))
            }
        };
        if let Some(dir) = &i.config.archive_dir {
            let folder = dir.join("RecordedCalls");
            let safe: String = format!("{call_id}-{filename}")
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            std::fs::create_dir_all(&folder)
                .and_then(|()| std::fs::write(folder.join(safe), &data))
                .map_err(|e| local(FailureClass::Temporary, "archive recording", e.to_string()))?;
        }
        let token = match reuse {
            Some(t) => t,
            None => {
                let up = i
                    .client
                    .upload(&i.account(), &filename, &content_type, data)
                    .await?;
                if let Some(c) = lock(&i.calls).get_mut(call_id) {
                    c.upload = Some((up.token.clone(), Instant::now()));
                }
                up.token
            }
        };
        let update = TicketUpdate {
            comment: Some(Comment {
                body: format!("Call recording: {filename}"),
                public: false,
                uploads: vec![token],
            }),
            ..TicketUpdate::default()
        };
        i.client
            .update_ticket(&i.account(), ticket_id, &update)
            .await?;
        if let Some(c) = lock(&i.calls).get_mut(call_id) {
            c.recording_attached = true;
        }
        lock(&i.stats).recordings_attached += 1;
        Ok(true)
    }
}
