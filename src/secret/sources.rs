//! Where secrets come from: a literal (warned about), an environment variable, or a file — relative files are looked
//! up in systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredential=`) first, then beside the config file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::secret::Secret;

/// The process environment as configuration sees it; tests pass their own instead of mutating the real one.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: HashMap<String, String>,
}

impl Environment {
    pub fn from_process() -> Self {
        Environment { vars: std::env::vars().collect() }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Environment { vars: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// The `SCANWATCH__…` overrides, in the form the `config` crate takes.
    pub fn vars(&self) -> &HashMap<String, String> {
        &self.vars
    }
}

/// How a secret was given, kept (without the value) so that `config show` can say where each secret came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", content = "name", rename_all = "lowercase")]
pub enum SecretSource {
    Literal,
    Env(String),
    File(PathBuf),
}

/// A resolved secret and where it came from. Serializes as `{"value":"[redacted]","from":"env","name":"…"}`.
#[derive(Debug, Clone, Serialize)]
pub struct SourcedSecret {
    pub value: Secret,
    #[serde(flatten)]
    pub source: SecretSource,
}

impl SourcedSecret {
    /// Whether the value was actually read. Only a config loaded with [`crate::config::Config::load_for_reading`]
    /// holds unavailable secrets (an empty value): the commands that load it never use them.
    pub fn is_available(&self) -> bool {
        !self.value.is_empty()
    }

    /// A secret that could not be resolved, kept with where it would come from.
    fn unavailable(source: SecretSource) -> Self {
        SourcedSecret { value: Secret::default(), source }
    }
}

/// One secret's three possible keys, as written in the file.
pub struct SecretKeys<'a> {
    /// The key stem, e.g. `sk` (so the keys are `sk`, `sk_env`, `sk_file`).
    pub stem: &'a str,
    pub literal: Option<&'a str>,
    pub env: Option<&'a str>,
    pub file: Option<&'a str>,
    /// Environment variables tried, in order, when none of the three keys is given.
    pub default_envs: &'a [&'a str],
}

impl<'a> SecretKeys<'a> {
    /// The three keys of `stem`, no default variables.
    pub fn of(stem: &'a str, literal: Option<&'a str>, env: Option<&'a str>, file: Option<&'a str>) -> Self {
        SecretKeys { stem, literal, env, file, default_envs: &[] }
    }

    /// Whether any of the three keys is written.
    pub fn given(&self) -> bool {
        self.literal.is_some() || self.env.is_some() || self.file.is_some()
    }

    /// The key as written (`secret_env`, not `secret`), so a problem names what the user wrote.
    pub fn written(&self) -> String {
        match (self.literal, self.env, self.file) {
            (None, Some(_), _) => format!("{}_env", self.stem),
            (None, None, Some(_)) => format!("{}_file", self.stem),
            _ => self.stem.to_string(),
        }
    }
}

/// Everything secret resolution needs from the outside world.
pub struct SecretContext<'a> {
    pub env: &'a Environment,
    pub config_dir: &'a Path,
    /// Loading for a command that only reads the database: a secret that cannot be resolved (variable unset, file
    /// missing) is not a problem; it resolves to an unavailable value ([`SourcedSecret::is_available`]).
    pub for_reading: bool,
}

/// Why a secret could not be resolved: the key (relative to its table) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretProblem {
    pub key: String,
    pub message: String,
    /// Where the secret was to come from, when the file names a source that could not be read (rather than the
    /// file itself being wrong): such a problem is no problem when loading for reading.
    pub unavailable: Option<SecretSource>,
}

impl SecretProblem {
    fn new(key: &str, message: impl Into<String>) -> Self {
        SecretProblem { key: key.to_string(), message: message.into(), unavailable: None }
    }
}

impl<'a> SecretContext<'a> {
    /// A context that resolves every secret (what the daemon and `validate` need).
    pub fn new(env: &'a Environment, config_dir: &'a Path) -> Self {
        SecretContext { env, config_dir, for_reading: false }
    }

    /// Resolves a secret; `Ok(None)` when it is not given and has no default (optional secrets). With
    /// `for_reading`, a secret that is given (or has defaults) but cannot be read resolves to an unavailable value.
    pub fn resolve(&self, keys: &SecretKeys<'_>) -> Result<Option<SourcedSecret>, SecretProblem> {
        match self.resolve_strictly(keys) {
            Err(SecretProblem { unavailable: Some(source), .. }) if self.for_reading => {
                Ok(Some(SourcedSecret::unavailable(source)))
            }
            Ok(None) if self.for_reading && !keys.default_envs.is_empty() => {
                let name = keys.default_envs.first().map(|n| (*n).to_string()).unwrap_or_default();
                Ok(Some(SourcedSecret::unavailable(SecretSource::Env(name))))
            }
            other => other,
        }
    }

    fn resolve_strictly(&self, keys: &SecretKeys<'_>) -> Result<Option<SourcedSecret>, SecretProblem> {
        let stem = keys.stem;
        let given = [keys.literal.is_some(), keys.env.is_some(), keys.file.is_some()].iter().filter(|b| **b).count();
        if given > 1 {
            return Err(SecretProblem::new(stem, format!("give only one of `{stem}`, `{stem}_env` and `{stem}_file`")));
        }
        if let Some(v) = keys.literal {
            if v.trim().is_empty() {
                return Err(SecretProblem::new(stem, "is empty or only whitespace"));
            }
            return Ok(Some(SourcedSecret { value: Secret::new(v), source: SecretSource::Literal }));
        }
        if let Some(name) = keys.env {
            return match self.read_env(&format!("{stem}_env"), name)? {
                Some(found) => Ok(Some(found)),
                None => Err(SecretProblem {
                    key: format!("{stem}_env"),
                    message: format!("environment variable {name} is not set (or empty); set it or use `{stem}_file`"),
                    unavailable: Some(SecretSource::Env(name.into())),
                }),
            };
        }
        if let Some(file) = keys.file {
            return self.read_file(stem, file).map(Some);
        }
        for name in keys.default_envs {
            if let Some(found) = self.read_env(stem, name)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The variable `name` (for the key `key`); a value of only whitespace is a problem, never a secret.
    fn read_env(&self, key: &str, name: &str) -> Result<Option<SourcedSecret>, SecretProblem> {
        match self.env.get(name) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Err(SecretProblem {
                key: key.to_string(),
                message: format!("environment variable {name} holds only whitespace; set it to the secret"),
                unavailable: Some(SecretSource::Env(name.into())),
            }),
            Some(v) => Ok(Some(SourcedSecret { value: Secret::new(v), source: SecretSource::Env(name.into()) })),
        }
    }

    fn read_file(&self, stem: &str, file: &str) -> Result<SourcedSecret, SecretProblem> {
        let key = format!("{stem}_file");
        let path = Path::new(file);
        let candidates: Vec<PathBuf> = if path.is_absolute() {
            vec![path.to_path_buf()]
        } else {
            let mut c = Vec::new();
            if let Some(dir) = self.env.get("CREDENTIALS_DIRECTORY") {
                c.push(Path::new(dir).join(path));
            }
            c.push(self.config_dir.join(path));
            c
        };
        let Some(found) = candidates.iter().find(|p| p.is_file()) else {
            let looked = candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
            return Err(SecretProblem {
                key,
                message: format!("file not found (looked in {looked})"),
                unavailable: Some(SecretSource::File(path.to_path_buf())),
            });
        };
        let unavailable = Some(SecretSource::File(found.clone()));
        let text = match std::fs::read_to_string(found) {
            Ok(text) => text,
            Err(e) => {
                let message = format!("cannot read {}: {e}", found.display());
                return Err(SecretProblem { key, message, unavailable });
            }
        };
        let value = text.trim_end_matches(['\r', '\n']);
        if value.trim().is_empty() {
            let message = format!("{} is empty or only whitespace", found.display());
            return Err(SecretProblem { key, message, unavailable });
        }
        Ok(SourcedSecret { value: Secret::new(value), source: SecretSource::File(found.clone()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<'a>(literal: Option<&'a str>, env: Option<&'a str>, file: Option<&'a str>) -> SecretKeys<'a> {
        SecretKeys { stem: "sk", literal, env, file, default_envs: &["HUAWEICLOUD_SDK_SK", "CLOUD_SDK_SK"] }
    }

    #[test]
    fn default_env_falls_back_to_the_samples_name() {
        let env = Environment::from_pairs([("CLOUD_SDK_SK", "v")]);
        let ctx = SecretContext::new(&env, Path::new("/nonexistent"));
        let s = ctx.resolve(&keys(None, None, None)).unwrap().unwrap();
        assert_eq!(s.value.expose(), "v");
        assert_eq!(s.source, SecretSource::Env("CLOUD_SDK_SK".into()));
    }

    #[test]
    fn a_named_env_that_is_unset_names_the_key_and_variable() {
        let env = Environment::default();
        let ctx = SecretContext::new(&env, Path::new("/nonexistent"));
        let e = ctx.resolve(&keys(None, Some("MY_SK"), None)).unwrap_err();
        assert_eq!(e.key, "sk_env");
        assert!(e.message.contains("MY_SK"), "{}", e.message);
    }

    #[test]
    fn relative_files_are_read_from_the_credentials_directory_first() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        std::fs::write(creds.join("sk"), "from-creds\n").unwrap();
        std::fs::write(dir.path().join("sk"), "beside-config\n").unwrap();
        let env = Environment::from_pairs([("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())]);
        let ctx = SecretContext::new(&env, dir.path());
        assert_eq!(ctx.resolve(&keys(None, None, Some("sk"))).unwrap().unwrap().value.expose(), "from-creds");
        let env = Environment::default();
        let ctx = SecretContext::new(&env, dir.path());
        assert_eq!(ctx.resolve(&keys(None, None, Some("sk"))).unwrap().unwrap().value.expose(), "beside-config");
        assert_eq!(ctx.resolve(&keys(None, None, Some("missing"))).unwrap_err().key, "sk_file");
    }

    #[test]
    fn two_sources_for_one_secret_is_an_error() {
        let env = Environment::default();
        let ctx = SecretContext::new(&env, Path::new("/"));
        assert!(ctx.resolve(&keys(Some("x"), Some("Y"), None)).unwrap_err().message.contains("only one"));
    }

    #[test]
    fn a_secret_of_only_whitespace_is_refused_naming_the_variable_or_file_but_not_the_value() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sk"), " \t \n").unwrap();
        let env = Environment::from_pairs([("MY_SK", "   "), ("HUAWEICLOUD_SDK_SK", "\t")]);
        let ctx = SecretContext::new(&env, dir.path());
        let e = ctx.resolve(&keys(None, Some("MY_SK"), None)).unwrap_err();
        assert_eq!(e.key, "sk_env");
        assert!(e.message.contains("MY_SK") && e.message.contains("whitespace"), "{}", e.message);
        let e = ctx.resolve(&keys(None, None, Some("sk"))).unwrap_err();
        assert_eq!(e.key, "sk_file");
        assert!(e.message.contains(&dir.path().join("sk").display().to_string()), "{}", e.message);
        let e = ctx.resolve(&keys(None, None, None)).unwrap_err();
        assert_eq!(e.key, "sk");
        assert!(e.message.contains("HUAWEICLOUD_SDK_SK"), "{}", e.message);
        assert_eq!(ctx.resolve(&keys(Some("  "), None, None)).unwrap_err().key, "sk");
    }

    #[test]
    fn for_reading_an_unreadable_secret_is_unavailable_but_a_wrong_file_is_still_wrong() {
        let env = Environment::default();
        let ctx = SecretContext { for_reading: true, ..SecretContext::new(&env, Path::new("/nonexistent")) };
        for k in [keys(None, Some("UNSET"), None), keys(None, None, Some("missing")), keys(None, None, None)] {
            let s = ctx.resolve(&k).unwrap().unwrap();
            assert!(!s.is_available());
        }
        assert!(ctx.resolve(&keys(Some("x"), Some("Y"), None)).is_err(), "two sources is the file's mistake");
        let optional = SecretKeys { default_envs: &[], ..keys(None, None, None) };
        assert!(ctx.resolve(&optional).unwrap().is_none(), "an optional secret not given stays absent");
    }
}
