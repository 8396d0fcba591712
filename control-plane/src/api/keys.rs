use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::Principal;
use super::{parse_json, present, AppState, JsonBody, List, PathParam};
use crate::clock;
use crate::domain::validate;
use crate::domain::{Alias, Category, Description, ValidationError};
use crate::domain::{AllowRule, ApiKey, KeyPatch, NewKey, Quotas, QuotasPatch, Rotation};
use crate::error::ApiError;
use crate::ids;
use crate::secret::ApiKeySecret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    alias: String,
    description: Option<String>,
    category: Option<String>,
    expires_at: Option<String>,
    quotas: Option<QuotasInput>,
    allowed: Option<Vec<AllowInput>>,
}

/// Quota values stay raw JSON so that `0`, `-1` or `"10"` get a message naming the field.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasInput {
    #[serde(default, deserialize_with = "present")]
    total: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    daily: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    weekly: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    monthly: Option<Value>,
}

impl QuotasInput {
    fn fields(&self) -> [(&'static str, &Option<Value>); 4] {
        [
            ("quotas.total", &self.total),
            ("quotas.daily", &self.daily),
            ("quotas.weekly", &self.weekly),
            ("quotas.monthly", &self.monthly),
        ]
    }

    /// Absent and `null` windows have no cap.
    fn to_quotas(&self) -> Result<Quotas, ValidationError> {
        let [total, daily, weekly, monthly] = self.fields().map(|(field, value)| match value {
            Some(v) => validate::quota(field, v),
            None => Ok(None),
        });
        Ok(Quotas {
            total: total?,
            daily: daily?,
            weekly: weekly?,
            monthly: monthly?,
        })
    }

    /// Merge-patch: absent windows are kept, `null` removes the cap.
    fn to_patch(&self) -> Result<QuotasPatch, ValidationError> {
        let [total, daily, weekly, monthly] = self.fields().map(|(field, value)| {
            value
                .as_ref()
                .map(|v| validate::quota(field, v))
                .transpose()
        });
        Ok(QuotasPatch {
            total: total?,
            daily: daily?,
            weekly: weekly?,
            monthly: monthly?,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowInput {
    #[serde(default = "any_method")]
    method: String,
    path: String,
}

fn any_method() -> String {
    "*".to_owned()
}

fn allowed(input: &[AllowInput]) -> Result<Vec<AllowRule>, ValidationError> {
    validate::allowed(input.iter().map(|r| (r.method.as_str(), r.path.as_str())))
}

/// `Option<Option<_>>`: absent = unchanged, `null` = cleared (where clearing makes sense).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchKey {
    #[serde(default, deserialize_with = "present")]
    alias: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    category: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    active: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    quotas: Option<Option<QuotasInput>>,
    #[serde(default, deserialize_with = "present")]
    allowed: Option<Option<Vec<AllowInput>>>,
}

fn not_null<T>(field: &str, value: Option<Option<T>>, hint: &str) -> Result<Option<T>, ApiError> {
    match value {
        Some(None) => Err(ApiError::BadRequest(format!(
            "{field}: must not be null{hint}"
        ))),
        Some(Some(v)) => Ok(Some(v)),
        None => Ok(None),
    }
}

impl PatchKey {
    fn into_patch(self) -> Result<KeyPatch, ApiError> {
        let alias = not_null("alias", self.alias, "")?;
        let category = not_null("category", self.category, "")?;
        let active = not_null("active", self.active, "")?;
        let allowed_rules = not_null("allowed", self.allowed, " (use [] to allow every endpoint)")?;
        Ok(KeyPatch {
            alias: alias.as_deref().map(Alias::parse).transpose()?,
            description: self
                .description
                .map(|d| Description::parse(d.as_deref()))
                .transpose()?,
            category: category.as_deref().map(Category::parse).transpose()?,
            active,
            expires_at: self
                .expires_at
                .map(|e| e.map(|s| validate::timestamp("expires_at", &s)).transpose())
                .transpose()?,
            quotas: match self.quotas {
                None => QuotasPatch::default(),
                Some(None) => QuotasPatch::clear_all(),
                Some(Some(q)) => q.to_patch()?,
            },
            allowed: allowed_rules.as_deref().map(allowed).transpose()?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    #[serde(default)]
    grace_seconds: i64,
}

/// A key as the API shows it: never the secret, except right after creation or rotation.
#[derive(Debug, Serialize)]
pub struct KeyView {
    id: String,
    workspace_id: String,
    alias: String,
    description: Option<String>,
    category: String,
    active: bool,
    status: &'static str,
    expires_at: Option<String>,
    quotas: Quotas,
    allowed: Vec<AllowRule>,
    created_at: String,
    last_used_at: Option<String>,
    calls_this_month: u64,
    prefix: String,
    hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl KeyView {
    fn new(key: ApiKey, now_ms: i64) -> Self {
        Self {
            status: key.status(now_ms).as_str(),
            expires_at: key.expires_at.map(clock::format_rfc3339),
            created_at: clock::format_rfc3339(key.created_at),
            last_used_at: key.last_used_at.map(clock::format_rfc3339),
            calls_this_month: key.calls_this_month,
            id: key.id,
            workspace_id: key.workspace_id,
            alias: key.alias,
            description: key.description,
            category: key.category,
            active: key.active,
            quotas: key.quotas,
            allowed: key.allowed,
            prefix: key.prefix,
            hash: key.hash,
            secret: None,
        }
    }

    fn with_secret(mut self, secret: &ApiKeySecret) -> Self {
        self.secret = Some(secret.expose().to_owned());
        self
    }
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(workspace_id): PathParam,
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<(StatusCode, Json<KeyView>), ApiError> {
    principal.check_workspace(&workspace_id)?;
    let alias = Alias::parse(&body.alias)?;
    let description = Description::parse(body.description.as_deref())?;
    let category = Category::parse(body.category.as_deref().unwrap_or("production"))?;
    let expires_at = body
        .expires_at
        .as_deref()
        .map(|s| validate::timestamp("expires_at", s))
        .transpose()?;
    let quotas = body.quotas.unwrap_or_default().to_quotas()?;
    let allowed = allowed(body.allowed.as_deref().unwrap_or_default())?;

    let secret = ApiKeySecret::generate();
    let now = clock::now_ms();
    let key = state
        .store
        .create_key(NewKey {
            id: ids::key_id(),
            workspace_id,
            alias,
            description,
            category,
            expires_at,
            quotas,
            allowed,
            created_at: now,
            hash: secret.hash(),
            prefix: secret.display_prefix(),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(KeyView::new(key, now).with_secret(&secret)),
    ))
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(workspace_id): PathParam,
) -> Result<Json<List<KeyView>>, ApiError> {
    principal.check_workspace(&workspace_id)?;
    let keys = state.store.keys(&workspace_id).await?;
    let now = clock::now_ms();
    Ok(Json(List {
        data: keys.into_iter().map(|k| KeyView::new(k, now)).collect(),
    }))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(id): PathParam,
) -> Result<Json<KeyView>, ApiError> {
    let key = principal.key(&state, &id).await?;
    Ok(Json(KeyView::new(key, clock::now_ms())))
}

pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<PatchKey>,
) -> Result<Json<KeyView>, ApiError> {
    principal.key(&state, &id).await?;
    let patch = body.into_patch()?;
    let key = state.store.update_key(&id, patch).await?;
    Ok(Json(KeyView::new(key, clock::now_ms())))
}

/// The body is optional: an empty body rotates without grace.
pub async fn rotate(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(id): PathParam,
    body: Bytes,
) -> Result<Json<KeyView>, ApiError> {
    principal.key(&state, &id).await?;
    let body: RotateKey = if body.iter().all(u8::is_ascii_whitespace) {
        RotateKey::default()
    } else {
        parse_json(&body)?
    };
    let grace = validate::grace_seconds(body.grace_seconds)?;
    let secret = ApiKeySecret::generate();
    let now = clock::now_ms();
    let key = state
        .store
        .rotate_key(
            &id,
            Rotation {
                new_hash: secret.hash(),
                new_prefix: secret.display_prefix(),
                now_ms: now,
                old_valid_until: (grace > 0).then(|| now + grace * 1000),
            },
        )
        .await?;
    Ok(Json(KeyView::new(key, now).with_secret(&secret)))
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(id): PathParam,
) -> Result<StatusCode, ApiError> {
    principal.key(&state, &id).await?;
    state.store.delete_key(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
