//! The OpenAPI 3 document of `/v1`, generated from the handlers' annotations.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{exec, files, logs, processes, sandboxes, stats};

#[derive(OpenApi)]
#[openapi(
    info(title = "hearth", description = "hearth's REST API: microVM sandboxes, exec, files, processes, logs."),
    paths(
        sandboxes::create, sandboxes::list, sandboxes::get_one, sandboxes::delete,
        sandboxes::timeout, sandboxes::stop, sandboxes::start,
        exec::exec, exec::exec_stream, exec::stdin, exec::exec_ws,
        files::download, files::upload, files::list, files::stat, files::mkdir,
        files::remove, files::rename,
        processes::list, processes::start, processes::attach, processes::kill,
        stats::stats, logs::logs,
    ),
    components(schemas(
        crate::error::ErrorBody, sandboxes::ProgressEvent, exec::ExecEvent,
        processes::AttachEventView,
    )),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = [])),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The document as JSON.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub async fn serve() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(document())
}
