//! Multipart uploads: a file field spooled to disk as it arrives (bounded memory whatever
//! its size, any field order), then streamed on to a model service in chunks.

use axum::{extract::multipart::Field, http::StatusCode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};

use super::error::ApiError;

/// Size of the chunks an upload is streamed on in.
pub const CHUNK: usize = 256 * 1024;

/// A spooled upload (the file is deleted when this is dropped).
pub struct Spooled {
    pub file: tempfile::NamedTempFile,
    pub size: u64,
    /// The client's file name.
    pub name: String,
}

fn io_error(e: std::io::Error) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "server_error",
        code: None,
        param: None,
        message: format!("cannot spool the upload: {e}"),
    }
}

/// The multipart body is malformed.
pub fn bad_form(e: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::invalid("file", format!("the multipart body is not valid: {e}"))
}

/// Writes `field` to a temporary file; 413 past `limit` bytes, 400 when empty.
pub async fn spool(mut field: Field<'_>, limit: u64) -> Result<Spooled, ApiError> {
    let name = field.file_name().unwrap_or_default().to_string();
    let param = field.name().unwrap_or("file").to_string();
    let file = tempfile::NamedTempFile::new().map_err(io_error)?;
    let mut out = tokio::fs::File::from_std(file.reopen().map_err(io_error)?);
    let mut size = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(bad_form)? {
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                ..ApiError::invalid(&param, format!("the file is larger than the limit of {limit} bytes"))
            });
        }
        out.write_all(&chunk).await.map_err(io_error)?;
    }
    out.flush().await.map_err(io_error)?;
    if size == 0 {
        return Err(ApiError::invalid(&param, "the uploaded file is empty"));
    }
    Ok(Spooled { file, size, name })
}

impl Spooled {
    /// The whole file in memory (images: bounded by the upload limit).
    pub async fn read_all(&self) -> Result<Vec<u8>, ApiError> {
        tokio::fs::read(self.file.path()).await.map_err(io_error)
    }

    /// Streams the file into a channel of chunks from a task; the file is removed once sent.
    pub fn stream(self) -> Result<mpsc::Receiver<Vec<u8>>, ApiError> {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
        let reader = self.file.reopen().map_err(io_error)?;
        tokio::spawn(async move {
            let _keep = self.file;
            let mut reader = tokio::fs::File::from_std(reader);
            let mut buf = vec![0u8; CHUNK];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// A form of one uploaded `file` and text fields (in order; repeated names kept).
pub struct Form {
    pub file: Spooled,
    pub fields: Vec<(String, String)>,
}

/// Reads a multipart form: the `file` field spooled (≤ `limit` bytes), the others as text.
/// 400 naming `what` when no file came.
pub async fn read_form(mut form: axum::extract::Multipart, limit: u64, what: &str) -> Result<Form, ApiError> {
    let mut file = None;
    let mut fields = Vec::new();
    while let Some(field) = form.next_field().await.map_err(bad_form)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            file = Some(spool(field, limit).await?);
        } else {
            fields.push((name, field.text().await.map_err(bad_form)?));
        }
    }
    let file = file.ok_or_else(|| ApiError::invalid("file", format!("no {what} was uploaded (multipart field `file`)")))?;
    Ok(Form { file, fields })
}
