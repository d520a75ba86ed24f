//! The gRPC client: one connection (opened on first use), on its own runtime thread or on its caller's
//! runtime, every call with the instance name, the SHA-256 digest function and the bearer token.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bazel_remote_apis::google::bytestream::byte_stream_client::ByteStreamClient;
use bazel_remote_apis::google::bytestream::{ReadRequest, WriteRequest};
use bazel_remote_apis::google::longrunning::operation::Result as OperationResult;
use bazel_remote_apis::google::longrunning::operations_client::OperationsClient;
use bazel_remote_apis::google::longrunning::{CancelOperationRequest, Operation as Longrunning};
use prost::Message;
use sha2::{Digest as _, Sha256};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use zeroize::Zeroizing;

use super::proto::{
    self, action_cache_client::ActionCacheClient, batch_update_blobs_request,
    capabilities_client::CapabilitiesClient,
    content_addressable_storage_client::ContentAddressableStorageClient, digest_function,
    execution_client::ExecutionClient, execution_stage, ActionResult, Digest,
};
use super::tree::{BlobSource, Blobs};
use super::ReapiError;

/// Where the engine is and how to talk to it.
pub struct Endpoint {
    /// `grpc://host:port` or `grpcs://host:port`.
    pub url: String,
    /// The instance name (`""` for most single-tenant engines).
    pub instance_name: String,
    /// Sent as `authorization: Bearer …`.
    pub token: Option<Zeroizing<String>>,
    /// PEM certificate authorities to trust for `grpcs://` instead of the built-in roots.
    pub ca_pem: Option<Vec<u8>>,
    /// How long a call other than `Execute` may take.
    pub timeout: Duration,
}

/// What the server's `Capabilities` allow.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The most bytes one batch call may carry (REAPI's default is 4 MiB when the server says 0).
    pub max_batch: usize,
    /// The largest blob the server stores, if it says.
    pub max_blob: Option<u64>,
    /// Whether it executes actions (a cache-only server does not).
    pub exec_enabled: bool,
    /// Whether it accepts SHA-256 digests, the only function cairn uses.
    pub sha256: bool,
    /// The API versions it speaks, e.g. `2.0–2.11`.
    pub api: String,
}

/// The name of an operation under way, once the server has given it (to cancel it, or wait for it again).
#[derive(Debug, Clone, Default)]
pub struct Operation {
    name: Arc<Mutex<Option<String>>>,
}

impl Operation {
    /// The name, if the server has given one.
    pub fn name(&self) -> Option<String> {
        self.name.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, name: &str) {
        if !name.is_empty() {
            *self.name.lock().unwrap_or_else(|e| e.into_inner()) = Some(name.to_owned());
        }
    }
}

/// How an `Execute` ended.
#[derive(Debug)]
pub struct Finished {
    /// The server's answer.
    pub response: proto::ExecuteResponse,
    /// When the server said the action started executing (it had been queued until then), if it said.
    pub executing_since: Option<Instant>,
}

/// Adds the bearer token to every call.
#[derive(Clone)]
struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Service = InterceptedService<Channel, Auth>;

/// Messages larger than this are refused when decoding (a `Tree` of a big output directory can be large).
const MAX_MESSAGE: usize = 256 << 20;
/// ByteStream chunks.
const CHUNK: usize = 1 << 20;
/// A batch is kept this far under the server's limit, for the message's own framing.
const BATCH_MARGIN: usize = 64 << 10;
/// Blobs of an action totalling at most this many bytes are sent without `FindMissingBlobs` first.
const SEND_WITHOUT_ASKING: usize = 64 << 10;
/// How many times a broken `Execute` stream is resumed with `WaitExecution`.
const RESUMES: u32 = 3;

struct Inner {
    endpoint: tonic::transport::Endpoint,
    /// Made on first use, on the runtime the calls run on (its connection task lives there).
    channel: std::sync::OnceLock<Channel>,
    auth: Auth,
    instance: String,
    timeout: Duration,
    limits: tokio::sync::OnceCell<Limits>,
}

/// The runtime thread: stopped and joined when the client goes.
struct Worker {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A REAPI client. Cheap to share (`Arc`). With its own runtime thread ([`Client::new`]), calls come from any
/// thread, async or blocking; on its caller's runtime ([`Client::on_caller_runtime`]), from async code on one
/// runtime only.
pub struct Client {
    inner: Arc<Inner>,
    /// `None`: calls run where they are awaited.
    worker: Option<Worker>,
    shown: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reapi::Client({})", self.shown)
    }
}

impl Client {
    /// A client for `endpoint`. Nothing is sent yet: the connection opens on the first call.
    pub fn new(endpoint: Endpoint) -> Result<Client, ReapiError> {
        let bad = |reason: &str| ReapiError::BadUrl {
            url: endpoint.url.clone(),
            reason: reason.to_owned(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| bad(&format!("cannot start its runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("cairn-reapi".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| bad(&format!("cannot start its thread: {e}")))?;
        Ok(Client {
            worker: Some(Worker {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            }),
            ..Client::on_caller_runtime(endpoint)?
        })
    }

    /// A client whose calls run on the runtime that awaits them: for a caller that is itself async and on one
    /// runtime (the scheduler), this saves two hand-offs between threads per call. [`Client::blocking`] is
    /// refused.
    pub fn on_caller_runtime(endpoint: Endpoint) -> Result<Client, ReapiError> {
        let bad = |reason: &str| ReapiError::BadUrl {
            url: endpoint.url.clone(),
            reason: reason.to_owned(),
        };
        let (tls, rest) = if let Some(rest) = endpoint.url.strip_prefix("grpcs://") {
            (true, rest)
        } else if let Some(rest) = endpoint.url.strip_prefix("grpc://") {
            (false, rest)
        } else {
            return Err(bad("it must start with `grpc://` or `grpcs://`"));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || authority.contains('@') {
            return Err(bad(
                "write it as `grpc://HOST:PORT` (no path, no credentials)",
            ));
        }
        let uri = format!("{}://{authority}", if tls { "https" } else { "http" });
        let mut channel = tonic::transport::Endpoint::from_shared(uri)
            .map_err(|e| bad(&e.to_string()))?
            .connect_timeout(endpoint.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(false);
        if tls {
            let mut config = ClientTlsConfig::new();
            config = match &endpoint.ca_pem {
                Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
                None => config.with_webpki_roots(),
            };
            channel = channel
                .tls_config(config)
                .map_err(|e| bad(&e.to_string()))?;
        }
        let auth = match &endpoint.token {
            Some(token) => Some(
                MetadataValue::try_from(format!("Bearer {}", token.trim()))
                    .map_err(|_| bad("the token is not a valid header value"))?,
            ),
            None => None,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                endpoint: channel,
                channel: std::sync::OnceLock::new(),
                auth: Auth(auth),
                instance: endpoint.instance_name,
                timeout: endpoint.timeout,
                limits: tokio::sync::OnceCell::new(),
            }),
            worker: None,
            shown: endpoint.url,
        })
    }

    /// The URL, as messages show it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The instance name.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Runs `call` on the client's runtime.
    fn spawn<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, ReapiError>> + Send + 'static,
    ) -> impl Future<Output = Result<T, ReapiError>> + Send + 'static {
        let (task, here) = match &self.worker {
            Some(worker) => (Some(worker.handle.spawn(call)), None),
            None => (None, Some(call)),
        };
        async move {
            match (task, here) {
                (Some(task), _) => task.await.unwrap_or(Err(ReapiError::Stopped)),
                (None, Some(call)) => call.await,
                (None, None) => Err(ReapiError::Stopped),
            }
        }
    }

    /// Runs `call` on the client's runtime and waits for it, from code that may block (not from inside an
    /// async task).
    pub fn blocking<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, ReapiError>> + Send + 'static,
    ) -> Result<T, ReapiError> {
        let Some(worker) = &self.worker else {
            return Err(ReapiError::Protocol(
                "a client on its caller's runtime cannot be waited for by blocking".into(),
            ));
        };
        let (sender, receiver) = std::sync::mpsc::channel();
        worker.handle.spawn(async move {
            let _ = sender.send(call.await);
        });
        receiver.recv().unwrap_or(Err(ReapiError::Stopped))
    }

    /// The server's capabilities (asked once per client).
    pub fn capabilities(
        &self,
    ) -> impl Future<Output = Result<Limits, ReapiError>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        self.spawn(async move { inner.limits().await.cloned() })
    }

    /// The action cache's result for `action`, if it has one.
    /// `inline_files` names output files whose contents the server may send with the answer (saving a
    /// download round trip for small ones).
    pub fn get_action_result(
        &self,
        action: Digest,
        inline_files: Vec<String>,
    ) -> impl Future<Output = Result<Option<ActionResult>, ReapiError>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        self.spawn(async move {
            let request = proto::GetActionResultRequest {
                instance_name: inner.instance.clone(),
                action_digest: Some(action),
                inline_stdout: true,
                inline_stderr: true,
                inline_output_files: inline_files,
                digest_function: digest_function::Value::Sha256 as i32,
            };
            let mut client = inner.action_cache();
            match client.get_action_result(inner.bounded(request)).await {
                Ok(response) => Ok(Some(response.into_inner())),
                Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
                Err(status) => Err(ReapiError::status("GetActionResult", status)),
            }
        })
    }

    /// Stores `result` as the action cache's result for `action` (its blobs must be in the CAS already).
    pub fn update_action_result(
        &self,
        action: Digest,
        result: ActionResult,
    ) -> impl Future<Output = Result<(), ReapiError>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        self.spawn(async move {
            let request = proto::UpdateActionResultRequest {
                instance_name: inner.instance.clone(),
                action_digest: Some(action),
                action_result: Some(result),
                results_cache_policy: None,
                digest_function: digest_function::Value::Sha256 as i32,
            };
            inner
                .action_cache()
                .update_action_result(inner.bounded(request))
                .await
                .map_err(|s| ReapiError::status("UpdateActionResult", s))?;
            Ok(())
        })
    }

    /// Sends every blob of `blobs` the server lacks; returns how many blobs and bytes were sent.
    pub fn upload_missing(
        &self,
        blobs: Arc<Blobs>,
    ) -> impl Future<Output = Result<(u64, u64), ReapiError>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        self.spawn(async move { inner.upload_missing(&blobs).await })
    }

    /// Reads the blobs with these digests, each checked against its digest.
    pub fn read_blobs(
        &self,
        digests: Vec<Digest>,
    ) -> impl Future<Output = Result<HashMap<String, Vec<u8>>, ReapiError>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        // Empty blobs need no asking, and nothing to fetch (everything came inline) means no trip to the
        // client's thread.
        let (empty, digests): (Vec<Digest>, Vec<Digest>) =
            digests.into_iter().partition(|d| d.size_bytes == 0);
        let call = (!digests.is_empty())
            .then(|| self.spawn(async move { inner.read_blobs(digests).await }));
        async move {
            let mut found = match call {
                Some(call) => call.await?,
                None => HashMap::new(),
            };
            for digest in empty {
                // Only the empty content has size 0; a server naming another hash with it is wrong.
                if digest.hash != super::tree::digest_of(&[]).hash {
                    return Err(ReapiError::Protocol(format!(
                        "blob {} does not match its digest",
                        digest.hash
                    )));
                }
                found.insert(digest.hash, Vec::new());
            }
            Ok(found)
        }
    }

    /// Executes `action` (looked up in the action cache first unless `skip_cache_lookup`), resuming with
    /// `WaitExecution` when the stream breaks; `operation` learns the operation's name as soon as the server
    /// gives it, so that the caller can cancel it.
    pub fn execute(
        &self,
        action: Digest,
        skip_cache_lookup: bool,
        operation: Operation,
    ) -> impl Future<Output = Result<Finished, ReapiError>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        self.spawn(async move { inner.execute(action, skip_cache_lookup, operation).await })
    }

    /// Asks the server to cancel an operation (best effort: the answer is not waited for long).
    pub fn cancel(
        &self,
        name: String,
    ) -> impl Future<Output = Result<(), ReapiError>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        self.spawn(async move {
            let mut client =
                OperationsClient::with_interceptor(inner.channel(), inner.auth.clone());
            let mut request = tonic::Request::new(CancelOperationRequest { name });
            request.set_timeout(Duration::from_secs(2));
            client
                .cancel_operation(request)
                .await
                .map_err(|s| ReapiError::status("CancelOperation", s))?;
            Ok(())
        })
    }
}

impl Inner {
    /// The channel, made on first use on the runtime of the calling task.
    fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| self.endpoint.connect_lazy())
            .clone()
    }

    fn bounded<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    fn action_cache(&self) -> ActionCacheClient<Service> {
        ActionCacheClient::with_interceptor(self.channel(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    fn cas(&self) -> ContentAddressableStorageClient<Service> {
        ContentAddressableStorageClient::with_interceptor(self.channel(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    fn byte_stream(&self) -> ByteStreamClient<Service> {
        ByteStreamClient::with_interceptor(self.channel(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    async fn limits(&self) -> Result<&Limits, ReapiError> {
        self.limits
            .get_or_try_init(|| async {
                let mut client =
                    CapabilitiesClient::with_interceptor(self.channel(), self.auth.clone());
                let capabilities = client
                    .get_capabilities(self.bounded(proto::GetCapabilitiesRequest {
                        instance_name: self.instance.clone(),
                    }))
                    .await
                    .map_err(|s| ReapiError::status("GetCapabilities", s))?
                    .into_inner();
                let cache = capabilities.cache_capabilities.unwrap_or_default();
                let execution = capabilities.execution_capabilities;
                let sha256 = digest_function::Value::Sha256 as i32;
                let version = |v: &Option<bazel_remote_apis::build::bazel::semver::SemVer>| {
                    v.as_ref()
                        .map_or_else(|| "?".to_owned(), |v| format!("{}.{}", v.major, v.minor))
                };
                Ok(Limits {
                    max_batch: match cache.max_batch_total_size_bytes {
                        n if n > 0 => n as usize,
                        _ => 4 << 20,
                    },
                    max_blob: (cache.max_cas_blob_size_bytes > 0)
                        .then_some(cache.max_cas_blob_size_bytes as u64),
                    exec_enabled: execution.as_ref().is_some_and(|e| e.exec_enabled),
                    // An empty list predates the field: SHA-256 was the only function then.
                    sha256: cache.digest_functions.is_empty()
                        || cache.digest_functions.contains(&sha256),
                    api: format!(
                        "{}–{}",
                        version(&capabilities.low_api_version),
                        version(&capabilities.high_api_version)
                    ),
                })
            })
            .await
    }

    fn batch_limit(limits: &Limits) -> usize {
        limits.max_batch.saturating_sub(BATCH_MARGIN).max(64 << 10)
    }

    fn resource_prefix(&self) -> String {
        if self.instance.is_empty() {
            String::new()
        } else {
            format!("{}/", self.instance)
        }
    }

    async fn upload_missing(&self, blobs: &Blobs) -> Result<(u64, u64), ReapiError> {
        let limits = self.limits().await?.clone();
        let all = blobs.digests();
        let total: i64 = all.iter().map(|d| d.size_bytes).sum();
        // A small action is cheaper to send whole than to ask about first: one round trip instead of two.
        let ask = total as usize > SEND_WITHOUT_ASKING;
        let mut missing = if ask { Vec::new() } else { all };
        for part in blobs.digests().chunks(10_000).filter(|_| ask) {
            let response = self
                .cas()
                .find_missing_blobs(self.bounded(proto::FindMissingBlobsRequest {
                    instance_name: self.instance.clone(),
                    blob_digests: part.to_vec(),
                    digest_function: digest_function::Value::Sha256 as i32,
                }))
                .await
                .map_err(|s| ReapiError::status("FindMissingBlobs", s))?
                .into_inner();
            missing.extend(response.missing_blob_digests);
        }
        let batch_limit = Self::batch_limit(&limits);
        let (mut sent_blobs, mut sent_bytes) = (0u64, 0u64);
        let mut batch: Vec<batch_update_blobs_request::Request> = Vec::new();
        let mut batch_size = 0usize;
        for digest in missing {
            let source = blobs.source(&digest.hash).ok_or_else(|| {
                ReapiError::Protocol(format!(
                    "it asked for blob {} it was never offered",
                    digest.hash
                ))
            })?;
            if let Some(max) = limits.max_blob {
                if digest.size_bytes as u64 > max {
                    return Err(ReapiError::Protocol(format!(
                        "a blob of {} bytes is over the server's limit of {max}",
                        digest.size_bytes
                    )));
                }
            }
            let bytes = read_source(source, &digest)?;
            sent_blobs += 1;
            sent_bytes += bytes.len() as u64;
            if bytes.len() > batch_limit {
                self.write_stream(&digest, &bytes).await?;
                continue;
            }
            if batch_size + bytes.len() > batch_limit {
                self.send_batch(std::mem::take(&mut batch)).await?;
                batch_size = 0;
            }
            batch_size += bytes.len();
            batch.push(batch_update_blobs_request::Request {
                digest: Some(digest),
                data: bytes.to_vec(),
                compressor: 0,
            });
        }
        if !batch.is_empty() {
            self.send_batch(batch).await?;
        }
        Ok((sent_blobs, sent_bytes))
    }

    async fn send_batch(
        &self,
        requests: Vec<batch_update_blobs_request::Request>,
    ) -> Result<(), ReapiError> {
        let response = self
            .cas()
            .batch_update_blobs(self.bounded(proto::BatchUpdateBlobsRequest {
                instance_name: self.instance.clone(),
                requests,
                digest_function: digest_function::Value::Sha256 as i32,
            }))
            .await
            .map_err(|s| ReapiError::status("BatchUpdateBlobs", s))?
            .into_inner();
        for answer in response.responses {
            if let Some(status) = answer.status.filter(|s| s.code != 0) {
                return Err(ReapiError::Status {
                    call: "BatchUpdateBlobs",
                    code: tonic::Code::from(status.code),
                    message: status.message,
                });
            }
        }
        Ok(())
    }

    async fn write_stream(&self, digest: &Digest, bytes: &[u8]) -> Result<(), ReapiError> {
        let resource = format!(
            "{}uploads/{}/blobs/{}/{}",
            self.resource_prefix(),
            upload_id(),
            digest.hash,
            digest.size_bytes
        );
        let mut requests = Vec::new();
        let mut offset = 0usize;
        loop {
            let end = (offset + CHUNK).min(bytes.len());
            requests.push(WriteRequest {
                resource_name: if offset == 0 {
                    resource.clone()
                } else {
                    String::new()
                },
                write_offset: offset as i64,
                finish_write: end == bytes.len(),
                data: bytes[offset..end].to_vec(),
            });
            offset = end;
            if offset == bytes.len() {
                break;
            }
        }
        let mut request = tonic::Request::new(tonic::codegen::tokio_stream::iter(requests));
        // A large blob gets time in proportion to its size.
        request.set_timeout(self.timeout + Duration::from_secs(bytes.len() as u64 >> 20));
        let response = self
            .byte_stream()
            .write(request)
            .await
            .map_err(|s| ReapiError::status("ByteStream.Write", s))?
            .into_inner();
        // A server that already had the blob may end the write early and report the whole size.
        if response.committed_size != digest.size_bytes && response.committed_size != -1 {
            return Err(ReapiError::Protocol(format!(
                "ByteStream.Write committed {} of {} bytes",
                response.committed_size, digest.size_bytes
            )));
        }
        Ok(())
    }

    async fn read_blobs(
        &self,
        digests: Vec<Digest>,
    ) -> Result<HashMap<String, Vec<u8>>, ReapiError> {
        let limits = self.limits().await?.clone();
        let batch_limit = Self::batch_limit(&limits);
        let mut found = HashMap::new();
        let mut batch = Vec::new();
        let mut batch_size = 0usize;
        let mut seen = std::collections::HashSet::new();
        for digest in digests {
            if !seen.insert(digest.hash.clone()) {
                continue;
            }
            let size = usize::try_from(digest.size_bytes)
                .map_err(|_| ReapiError::Protocol("a negative blob size".into()))?;
            if size == 0 {
                found.insert(digest.hash.clone(), Vec::new());
                continue;
            }
            if size > batch_limit {
                let bytes = self.read_stream(&digest).await?;
                found.insert(digest.hash.clone(), bytes);
                continue;
            }
            if batch_size + size > batch_limit {
                self.read_batch(std::mem::take(&mut batch), &mut found)
                    .await?;
                batch_size = 0;
            }
            batch_size += size;
            batch.push(digest);
        }
        if !batch.is_empty() {
            self.read_batch(batch, &mut found).await?;
        }
        Ok(found)
    }

    async fn read_batch(
        &self,
        digests: Vec<Digest>,
        found: &mut HashMap<String, Vec<u8>>,
    ) -> Result<(), ReapiError> {
        let response = self
            .cas()
            .batch_read_blobs(self.bounded(proto::BatchReadBlobsRequest {
                instance_name: self.instance.clone(),
                digests,
                acceptable_compressors: Vec::new(),
                digest_function: digest_function::Value::Sha256 as i32,
            }))
            .await
            .map_err(|s| ReapiError::status("BatchReadBlobs", s))?
            .into_inner();
        for answer in response.responses {
            let digest = answer.digest.ok_or_else(|| {
                ReapiError::Protocol("a BatchReadBlobs answer without its digest".into())
            })?;
            if let Some(status) = answer.status.filter(|s| s.code != 0) {
                return Err(ReapiError::Status {
                    call: "BatchReadBlobs",
                    code: tonic::Code::from(status.code),
                    message: format!("blob {}: {}", digest.hash, status.message),
                });
            }
            check(&digest, &answer.data)?;
            found.insert(digest.hash, answer.data);
        }
        Ok(())
    }

    async fn read_stream(&self, digest: &Digest) -> Result<Vec<u8>, ReapiError> {
        let resource = format!(
            "{}blobs/{}/{}",
            self.resource_prefix(),
            digest.hash,
            digest.size_bytes
        );
        let mut request = tonic::Request::new(ReadRequest {
            resource_name: resource,
            read_offset: 0,
            read_limit: 0,
        });
        request.set_timeout(self.timeout + Duration::from_secs(digest.size_bytes as u64 >> 20));
        let mut stream = self
            .byte_stream()
            .read(request)
            .await
            .map_err(|s| ReapiError::status("ByteStream.Read", s))?
            .into_inner();
        let mut bytes = Vec::with_capacity(digest.size_bytes as usize);
        while let Some(part) = stream
            .message()
            .await
            .map_err(|s| ReapiError::status("ByteStream.Read", s))?
        {
            bytes.extend_from_slice(&part.data);
            if bytes.len() as i64 > digest.size_bytes {
                break;
            }
        }
        check(digest, &bytes)?;
        Ok(bytes)
    }

    async fn execute(
        &self,
        action: Digest,
        skip_cache_lookup: bool,
        operation: Operation,
    ) -> Result<Finished, ReapiError> {
        let request = proto::ExecuteRequest {
            instance_name: self.instance.clone(),
            skip_cache_lookup,
            action_digest: Some(action),
            digest_function: digest_function::Value::Sha256 as i32,
            ..Default::default()
        };
        let mut client = ExecutionClient::with_interceptor(self.channel(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE);
        let mut stream = client
            .execute(request)
            .await
            .map_err(|s| ReapiError::status("Execute", s))?
            .into_inner();
        let mut executing_since = None;
        let mut resumes = 0;
        loop {
            let next = stream.message().await;
            let broken = match next {
                Ok(Some(update)) => {
                    operation.set(&update.name);
                    if let Some(finished) = finish(&update, &mut executing_since)? {
                        return Ok(finished);
                    }
                    continue;
                }
                Ok(None) => None,
                Err(status) => Some(status),
            };
            // The stream ended before the operation did: ask for it again by name.
            let Some(name) = operation.name() else {
                return Err(match broken {
                    Some(status) => ReapiError::status("Execute", status),
                    None => ReapiError::Protocol("Execute ended without an operation".into()),
                });
            };
            if let Some(status) = &broken {
                if !matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Internal | tonic::Code::Unknown
                ) {
                    return Err(ReapiError::status("Execute", status.clone()));
                }
            }
            resumes += 1;
            if resumes > RESUMES {
                return Err(ReapiError::Protocol(format!(
                    "the operation `{name}` was lost {RESUMES} times"
                )));
            }
            stream = client
                .wait_execution(proto::WaitExecutionRequest { name })
                .await
                .map_err(|s| ReapiError::status("WaitExecution", s))?
                .into_inner();
        }
    }
}

/// The result of an operation update, once it is done.
fn finish(
    update: &Longrunning,
    executing_since: &mut Option<Instant>,
) -> Result<Option<Finished>, ReapiError> {
    if let Some(metadata) = &update.metadata {
        if let Ok(metadata) = proto::ExecuteOperationMetadata::decode(metadata.value.as_slice()) {
            if metadata.stage == execution_stage::Value::Executing as i32
                && executing_since.is_none()
            {
                *executing_since = Some(Instant::now());
            }
        }
    }
    if !update.done {
        return Ok(None);
    }
    match &update.result {
        Some(OperationResult::Response(any)) => {
            let response = proto::ExecuteResponse::decode(any.value.as_slice()).map_err(|e| {
                ReapiError::Protocol(format!("an ExecuteResponse that does not decode: {e}"))
            })?;
            Ok(Some(Finished {
                response,
                executing_since: *executing_since,
            }))
        }
        Some(OperationResult::Error(status)) => Err(ReapiError::Status {
            call: "Execute",
            code: tonic::Code::from(status.code),
            message: status.message.clone(),
        }),
        None => Err(ReapiError::Protocol(
            "a finished operation with neither a response nor an error".into(),
        )),
    }
}

/// The bytes of a blob to send, checked against its digest when read from a file again.
fn read_source(source: &BlobSource, digest: &Digest) -> Result<Arc<Vec<u8>>, ReapiError> {
    match source {
        BlobSource::Bytes(bytes) => Ok(Arc::clone(bytes)),
        BlobSource::File(path) => {
            let bytes = std::fs::read(path).map_err(|e| ReapiError::Input {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            check(digest, &bytes).map_err(|_| ReapiError::Input {
                path: path.display().to_string(),
                reason: "it changed while the action was being prepared".into(),
            })?;
            Ok(Arc::new(bytes))
        }
    }
}

/// Checks that `bytes` are what `digest` names.
fn check(digest: &Digest, bytes: &[u8]) -> Result<(), ReapiError> {
    let actual = super::tree::digest_of(bytes);
    if actual.size_bytes != digest.size_bytes || actual.hash != digest.hash {
        return Err(ReapiError::Protocol(format!(
            "blob {} does not match its digest",
            digest.hash
        )));
    }
    Ok(())
}

/// A random UUID (version 4) for a ByteStream upload's resource name.
fn upload_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Uniqueness, not secrecy, is what the name needs.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes = Sha256::digest(now.as_nanos().to_le_bytes()).as_slice()[..16]
            .try_into()
            .unwrap_or([0; 16]);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
