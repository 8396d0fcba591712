//! Key use cases the API and the dashboard share: create, list, patch, rotate, delete. The input is
//! raw (a quota is any JSON value, a timestamp any text), so that every bad value is refused here,
//! once, with the field it came from; both adapters show the same messages.

use serde_json::Value;

use super::{AppError, AppState, Principal};
use crate::clock;
use crate::domain::validate;
pub use crate::domain::wire::{
    AllowInput, CreateKey, CreditsInput, Object, PatchKey, QuotasInput, RateLimitsInput,
};
use crate::domain::{
    Alias, AllowRule, ApiKey, Category, CreditBudget, Description, ExternalId, KeyPatch, NewKey,
    Quotas, QuotasPatch, RateLimits, RateLimitsPatch, Rotation, ValidationError,
};
use crate::ids;
use crate::secret::ApiKeySecret;

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
    pub fn to_quotas(&self) -> Result<Quotas, ValidationError> {
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
    pub fn to_patch(&self) -> Result<QuotasPatch, ValidationError> {
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

impl RateLimitsInput {
    fn fields(&self) -> [(&'static str, &Option<Value>); 3] {
        [
            ("rate_limits.per_second", &self.per_second),
            ("rate_limits.per_minute", &self.per_minute),
            ("rate_limits.per_hour", &self.per_hour),
        ]
    }

    /// Absent and `null` windows have no limit.
    pub fn to_rate_limits(&self) -> Result<RateLimits, ValidationError> {
        let [per_second, per_minute, per_hour] = self.fields().map(|(field, value)| match value {
            Some(v) => validate::rate_limit(field, v),
            None => Ok(None),
        });
        Ok(RateLimits {
            per_second: per_second?,
            per_minute: per_minute?,
            per_hour: per_hour?,
        })
    }

    /// Merge-patch: absent windows are kept, `null` removes the limit.
    pub fn to_patch(&self) -> Result<RateLimitsPatch, ValidationError> {
        let [per_second, per_minute, per_hour] = self.fields().map(|(field, value)| {
            value
                .as_ref()
                .map(|v| validate::rate_limit(field, v))
                .transpose()
        });
        Ok(RateLimitsPatch {
            per_second: per_second?,
            per_minute: per_minute?,
            per_hour: per_hour?,
        })
    }
}

impl CreditsInput {
    pub fn to_budget(&self) -> Result<CreditBudget, ValidationError> {
        validate::credit_budget(self.limit.as_ref(), self.period.as_ref())
    }
}

pub fn allowed(input: &[Object<AllowInput>]) -> Result<Vec<AllowRule>, ValidationError> {
    validate::allowed(
        input
            .iter()
            .map(|Object(r)| (r.method.as_str(), r.path.as_str())),
    )
}

fn not_null<T>(
    field: &str,
    value: Option<Option<T>>,
    hint: &str,
) -> Result<Option<T>, ValidationError> {
    match value {
        Some(None) => Err(ValidationError::new(
            field,
            format!("must not be null{hint}"),
        )),
        Some(Some(v)) => Ok(Some(v)),
        None => Ok(None),
    }
}

impl PatchKey {
    fn into_patch(self) -> Result<KeyPatch, ValidationError> {
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
            // A past expiry is allowed here: it is how an operator expires a key now.
            expires_at: self
                .expires_at
                .map(|e| e.map(|s| validate::timestamp("expires_at", &s)).transpose())
                .transpose()?,
            quotas: match self.quotas {
                None => QuotasPatch::default(),
                Some(None) => QuotasPatch::clear_all(),
                Some(Some(Object(q))) => q.to_patch()?,
            },
            allowed: allowed_rules.as_deref().map(allowed).transpose()?,
            rate_limits: match self.rate_limits {
                None => RateLimitsPatch::default(),
                Some(None) => RateLimitsPatch::clear_all(),
                Some(Some(Object(r))) => r.to_patch()?,
            },
            credits: self
                .credits
                .map(|c| c.map(|Object(c)| c.to_budget()).transpose())
                .transpose()?,
            external_id: self
                .external_id
                .map(|e| e.as_deref().map(ExternalId::parse).transpose())
                .transpose()?,
            meta: self.meta.as_ref().map(validate::meta).transpose()?,
        })
    }
}

/// A key with its new secret: the only moment the secret exists outside the client.
pub struct KeyWithSecret {
    pub key: ApiKey,
    pub secret: ApiKeySecret,
    pub now_ms: i64,
}

pub async fn create(
    app: &AppState,
    principal: &Principal,
    workspace_id: &str,
    input: CreateKey,
) -> Result<KeyWithSecret, AppError> {
    principal.check_workspace(workspace_id)?;
    let now_ms = clock::now_ms();
    let alias = Alias::parse(&input.alias)?;
    let description = Description::parse(input.description.as_deref())?;
    let category = Category::parse(input.category.as_deref().unwrap_or("production"))?;
    let expires_at = input
        .expires_at
        .as_deref()
        .map(|s| validate::new_key_expiry(s, now_ms))
        .transpose()?;
    let quotas = input.quotas.unwrap_or_default().0.to_quotas()?;
    let allowed = allowed(input.allowed.as_deref().unwrap_or_default())?;
    let rate_limits = input.rate_limits.unwrap_or_default().0.to_rate_limits()?;
    let credits = input.credits.map(|Object(c)| c.to_budget()).transpose()?;
    let external_id = input
        .external_id
        .as_deref()
        .map(ExternalId::parse)
        .transpose()?;
    let meta = validate::meta(input.meta.as_ref().unwrap_or(&Value::Null))?;

    let secret = ApiKeySecret::generate();
    let key = app
        .store()
        .create_key(NewKey {
            id: ids::key_id(),
            workspace_id: workspace_id.to_owned(),
            alias,
            description,
            category,
            expires_at,
            quotas,
            allowed,
            created_at: now_ms,
            hash: secret.hash(),
            prefix: secret.display_prefix(),
            rate_limits,
            credits,
            external_id,
            meta,
        })
        .await?;
    Ok(KeyWithSecret {
        key,
        secret,
        now_ms,
    })
}

/// A new secret for the key; the previous ones keep working for `grace_seconds` (0: none).
pub async fn rotate(
    app: &AppState,
    principal: &Principal,
    key_id: &str,
    grace_seconds: i64,
) -> Result<KeyWithSecret, AppError> {
    principal.key(app, key_id).await?;
    let grace = validate::grace_seconds(grace_seconds)?;
    let secret = ApiKeySecret::generate();
    let now_ms = clock::now_ms();
    let key = app
        .store()
        .rotate_key(
            key_id,
            Rotation {
                new_hash: secret.hash(),
                new_prefix: secret.display_prefix(),
                now_ms,
                old_valid_until: (grace > 0).then(|| now_ms + grace * 1000),
            },
        )
        .await?;
    Ok(KeyWithSecret {
        key,
        secret,
        now_ms,
    })
}

/// The keys of a workspace the caller may see.
pub async fn list(
    app: &AppState,
    principal: &Principal,
    workspace_id: &str,
) -> Result<Vec<ApiKey>, AppError> {
    principal.check_workspace(workspace_id)?;
    Ok(app.store().keys(workspace_id).await?)
}

/// The keys of a workspace the caller may see whose `external_id` is `external_id` (an id no
/// key could have matches none).
pub async fn with_external_id(
    app: &AppState,
    principal: &Principal,
    workspace_id: &str,
    external_id: &str,
) -> Result<Vec<ApiKey>, AppError> {
    principal.check_workspace(workspace_id)?;
    let id = ExternalId::parse(external_id)?;
    Ok(app
        .store()
        .keys_with_external_id(Some(workspace_id), &id)
        .await?)
}

/// Applies a merge-patch (`PATCH /v1/keys/{id}`, or a page's button) to a key the caller may
/// see; a key it may not see is not found, whatever the patch says.
pub async fn update(
    app: &AppState,
    principal: &Principal,
    key_id: &str,
    input: PatchKey,
) -> Result<ApiKey, AppError> {
    principal.key(app, key_id).await?;
    let patch = input.into_patch()?;
    Ok(app.store().update_key(key_id, patch).await?)
}

/// Deletes a key never seen at the edge (a conflict otherwise: deactivate it instead).
pub async fn delete(app: &AppState, principal: &Principal, key_id: &str) -> Result<(), AppError> {
    principal.key(app, key_id).await?;
    Ok(app.store().delete_key(key_id).await?)
}
