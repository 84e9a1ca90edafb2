//! Image upload over the API (deploy without a registry): the wire types, haloyd's handlers and
//! the CLI client's calls for the three routes, named as Haloy names them:
//!
//! | method | path | request | success |
//! |---|---|---|---|
//! | POST | `/v1/images/layers/check` | [`LayerCheckRequest`] | 200 [`LayerCheckResponse`] |
//! | POST | `/v1/images/layers` | blob bytes from `X-Upload-Offset` (default 0); headers `X-Layer-Digest`, `X-Layer-Size` (default: Content-Length + offset) | 201 [`LayerUploadResponse`] |
//! | POST | `/v1/images/layers/assemble` | [`ImageAssembleRequest`] | 200 [`ImageAssembleResponse`] |
//!
//! A blob upload whose bytes do not match its digest answers 422 and leaves nothing behind; one
//! that starts at another offset than the server holds answers 409 (check again and resume).

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use super::client::{ApiClient, ClientError, RequestBody};
use super::server::{error, json, Body};
use crate::runtime::image::upload::{BlobState, UploadError};
use crate::runtime::ImageStore;

pub const DIGEST_HEADER: &str = "x-layer-digest";
pub const SIZE_HEADER: &str = "x-layer-size";
pub const OFFSET_HEADER: &str = "x-upload-offset";
/// An upload's answer comes once all its bytes are in: allow a slow link a long time.
const UPLOAD_ANSWER_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// `POST /v1/images/layers/check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerCheckRequest {
    pub digests: Vec<String>,
}

/// Which blobs the server has: `exists` committed, `partial` an interrupted upload to resume,
/// `missing` nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LayerCheckResponse {
    pub missing: Vec<String>,
    pub exists: Vec<String>,
    #[serde(default)]
    pub partial: Vec<PartialBlob>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialBlob {
    pub digest: String,
    /// Bytes the server holds; the next upload starts there.
    pub offset: u64,
}

/// `POST /v1/images/layers` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerUploadResponse {
    pub digest: String,
    pub size: u64,
    /// Bytes of this request stored (0 when the server had the blob already).
    pub written: u64,
}

/// `POST /v1/images/layers/assemble`: the image's manifest, byte for byte (its digest is the
/// image's), and the name to give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageAssembleRequest {
    pub image_ref: String,
    pub media_type: String,
    pub manifest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageAssembleResponse {
    /// The image's full name on the server.
    pub image: String,
    /// Manifest digest.
    pub digest: String,
    pub layers_unpacked: usize,
}

/// haloyd's side of the routes; `None` when the path is none of them.
pub(super) async fn route<B>(
    images: Option<&ImageStore>,
    req: Request<B>,
    method: &Method,
    path: &str,
) -> Option<Response<Body>>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
{
    let known = matches!(
        (method, path),
        (
            &Method::POST,
            "/v1/images/layers/check" | "/v1/images/layers" | "/v1/images/layers/assemble"
        )
    );
    if !known {
        return None;
    }
    let Some(images) = images else {
        return Some(error(
            StatusCode::NOT_IMPLEMENTED,
            "this haloyd has no image store for uploads",
            vec![],
        ));
    };
    Some(match path {
        "/v1/images/layers/check" => match super::server::read_json(req).await {
            Ok(body) => check(images, body).await,
            Err(resp) => resp,
        },
        "/v1/images/layers" => upload(images, req).await,
        _ => match super::server::read_json(req).await {
            Ok(body) => assemble(images, body).await,
            Err(resp) => resp,
        },
    })
}

async fn check(images: &ImageStore, req: LayerCheckRequest) -> Response<Body> {
    let states = match images.blob_states(&req.digests).await {
        Ok(states) => states,
        Err(e) => return upload_error(e),
    };
    let mut answer = LayerCheckResponse::default();
    for (digest, state) in req.digests.into_iter().zip(states) {
        match state {
            BlobState::Present => answer.exists.push(digest),
            BlobState::Missing => answer.missing.push(digest),
            BlobState::Partial { offset } => answer.partial.push(PartialBlob { digest, offset }),
        }
    }
    json(StatusCode::OK, &answer)
}

async fn upload<B>(images: &ImageStore, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
{
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let Some(digest) = header(DIGEST_HEADER) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the X-Layer-Digest header is required",
            vec![],
        );
    };
    let number = |name: &str, default: Option<u64>| match header(name) {
        Some(v) => v.parse::<u64>().ok(),
        None => default,
    };
    let Some(offset) = number(OFFSET_HEADER, Some(0)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "X-Upload-Offset must be a byte count",
            vec![],
        );
    };
    // Haloy's CLI sends no size: the whole blob is the body then.
    let body_length = number("content-length", None).map(|length| length + offset);
    let Some(size) = number(SIZE_HEADER, None).or(body_length) else {
        return error(
            StatusCode::BAD_REQUEST,
            "X-Layer-Size (or a Content-Length) must give the blob's size in bytes",
            vec![],
        );
    };
    let body = http_body_util::BodyDataStream::new(req.into_body())
        .map_err(|e| std::io::Error::other(e.to_string()));
    match images
        .upload_blob(&digest, size, offset, Box::pin(body))
        .await
    {
        Ok(done) => json(
            StatusCode::CREATED,
            &LayerUploadResponse {
                digest,
                size,
                written: done.written,
            },
        ),
        Err(e) => upload_error(e),
    }
}

async fn assemble(images: &ImageStore, req: ImageAssembleRequest) -> Response<Body> {
    match images
        .assemble_uploaded(&req.image_ref, &req.media_type, req.manifest.into_bytes())
        .await
    {
        Ok((info, report)) => json(
            StatusCode::OK,
            &ImageAssembleResponse {
                image: info.name,
                digest: info.digest,
                layers_unpacked: report.layers_unpacked,
            },
        ),
        Err(e) => upload_error(e),
    }
}

fn upload_error(e: UploadError) -> Response<Body> {
    let status = match &e {
        UploadError::InvalidDigest(_) | UploadError::Interrupted { .. } => StatusCode::BAD_REQUEST,
        UploadError::OffsetMismatch { .. } | UploadError::Busy { .. } => StatusCode::CONFLICT,
        UploadError::Corrupt { .. } | UploadError::Assemble { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        UploadError::Runtime(crate::runtime::RuntimeError::InvalidReference { .. })
        | UploadError::Runtime(crate::runtime::RuntimeError::InvalidImage { .. }) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        UploadError::Runtime(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e.to_string(), vec![])
}

impl ApiClient {
    /// `POST /v1/images/layers/check`.
    pub async fn check_layers(
        &self,
        digests: &[String],
    ) -> Result<LayerCheckResponse, ClientError> {
        let path = "/v1/images/layers/check";
        let body = serde_json::to_vec(&LayerCheckRequest {
            digests: digests.to_vec(),
        })
        .unwrap_or_default();
        let resp = self
            .send_body(
                Method::POST,
                path,
                vec![("content-type", "application/json".into())],
                json_body(body),
                true,
                Duration::from_secs(120),
            )
            .await?;
        self.read_json(path, resp).await
    }

    /// `POST /v1/images/layers`: bytes `offset..size` of blob `digest`, streamed from `data`.
    pub async fn upload_layer<S>(
        &self,
        digest: &str,
        size: u64,
        offset: u64,
        data: S,
    ) -> Result<LayerUploadResponse, ClientError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let path = "/v1/images/layers";
        let frames = data.map_ok(hyper::body::Frame::data);
        let body = http_body_util::StreamBody::new(frames).boxed_unsync();
        let headers = vec![
            ("content-type", "application/octet-stream".to_string()),
            (DIGEST_HEADER, digest.to_string()),
            (SIZE_HEADER, size.to_string()),
            (OFFSET_HEADER, offset.to_string()),
            ("content-length", (size - offset.min(size)).to_string()),
        ];
        let resp = self
            .send_body(
                Method::POST,
                path,
                headers,
                body,
                true,
                UPLOAD_ANSWER_TIMEOUT,
            )
            .await?;
        self.read_json(path, resp).await
    }

    /// `POST /v1/images/layers/assemble`.
    pub async fn assemble_image(
        &self,
        req: &ImageAssembleRequest,
    ) -> Result<ImageAssembleResponse, ClientError> {
        let path = "/v1/images/layers/assemble";
        let body = serde_json::to_vec(req).unwrap_or_default();
        // Unpacking big layers takes a while before the answer.
        let resp = self
            .send_body(
                Method::POST,
                path,
                vec![("content-type", "application/json".into())],
                json_body(body),
                true,
                Duration::from_secs(1800),
            )
            .await?;
        self.read_json(path, resp).await
    }
}

fn json_body(bytes: Vec<u8>) -> RequestBody {
    http_body_util::Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed_unsync()
}
