//! Services and callers, on `starling`.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use starling::{Client, ClientBuilder, ClientError, MethodError, PeerRef, RequestOptions};

use crate::manifest::{MANIFEST_METHOD, Manifest, Registration};

/// Builds a service: the methods it serves, then
/// [`connect`](Self::connect) identifies and registers it with the hub.
///
/// ```no_run
/// # async fn demo() -> Result<(), starling::ClientError> {
/// use example_service_hub::ServiceBuilder;
/// use starling::MethodError;
/// let billing = ServiceBuilder::new("ws://127.0.0.1:7703/ws", "billing")
///     .method("billing:charge", |amount: u64| async move {
///         Ok::<_, MethodError>(serde_json::json!({ "charged": amount }))
///     })
///     .connect()
///     .await?;
/// billing.closed().await; // serve until the hub goes away
/// # Ok(()) }
/// ```
#[must_use = "a ServiceBuilder does nothing until `connect` is called"]
pub struct ServiceBuilder {
    name: String,
    builder: ClientBuilder,
    methods: Vec<String>,
}

impl ServiceBuilder {
    /// A service called `name`, for the hub at `url`.
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            builder: Client::builder(url),
            methods: Vec::new(),
        }
    }

    /// Serves a method and lists it in the manifest (see
    /// [`starling::ClientBuilder::method`]).
    ///
    /// # Panics
    /// When `name` is registered twice.
    #[track_caller]
    pub fn method<P, R, E, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<MethodError> + Send + 'static,
        F: Fn(P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        self.builder = self.builder.method(name, handler);
        self.methods.push(name.to_owned());
        self
    }

    /// Connects, claims the name (`helios:identify`) and registers
    /// (`hub:register`); the hub then fetches the manifest with
    /// `service:manifest`.
    ///
    /// # Errors
    /// Connection errors; `NAME_TAKEN` when another live service holds the
    /// name; `INVALID_PAYLOAD` when the hub refuses the manifest.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let manifest = Manifest {
            name: self.name.clone(),
            methods: self.methods,
        };
        let client = self
            .builder
            .method(MANIFEST_METHOD, move |_: Value| {
                let manifest = manifest.clone();
                async move { Ok::<_, MethodError>(manifest) }
            })
            .connect()
            .await?;
        let registration = Registration {
            name: self.name.clone(),
            methods: None,
        };
        let registered = async {
            client.identify(self.name.as_str()).await?;
            client
                .request(
                    "hub:register",
                    serde_json::to_value(&registration).map_err(ClientError::Encode)?,
                )
                .await
        }
        .await;
        match registered {
            Ok(_) => Ok(client),
            Err(e) => {
                client.close().await;
                Err(e)
            }
        }
    }
}

/// Calls `method` on the service `service` through the hub.
///
/// # Errors
/// `PEER_NOT_FOUND` for an unknown or departed service, `FORBIDDEN` for a
/// method outside its manifest, the service's own error otherwise.
///
/// ```no_run
/// # async fn demo(client: starling::Client) -> Result<(), starling::ClientError> {
/// let receipt = example_service_hub::call_service(
///     &client, "billing", "billing:charge", serde_json::json!(42)).await?;
/// # Ok(()) }
/// ```
pub async fn call_service(
    client: &Client,
    service: &str,
    method: &str,
    payload: Value,
) -> Result<Value, ClientError> {
    let options = RequestOptions::new().peer(PeerRef::Name(service.to_owned()));
    client.request_with(method, payload, options).await
}
