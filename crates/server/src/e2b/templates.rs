//! E2B templates → hearth images. A template names a root image and the
//! sandbox size E2B would give it (E2B's default is 2 vCPU / 512 MiB; on a
//! small host hearth gives 1 vCPU).

use hearth_runtime::images::rootfs::parse_language;

use crate::error::{ApiError, ApiResult};

/// The template E2B uses when a create names none.
pub const DEFAULT_TEMPLATE: &str = "base";

/// The names a create may give, as shown in errors.
pub const KNOWN_TEMPLATES: &str = "base, python, javascript, node, ruby, golang";

/// What a template boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The hearth image (`CreateSpec.language`), canonical name.
    pub language: &'static str,
    pub cpus: u32,
    pub mem_mib: u32,
}

/// The template `name` (case-insensitive), or a 404 naming the known ones.
pub fn resolve(name: &str) -> ApiResult<Template> {
    let lang = match name.trim().to_ascii_lowercase().as_str() {
        "base" => Some("base"),
        "python" | "javascript" | "node" | "ruby" | "golang" => {
            parse_language(name).ok().map(|l| l.as_str())
        }
        _ => None,
    };
    match lang {
        Some(language) => Ok(Template {
            language,
            cpus: 1,
            mem_mib: 512,
        }),
        None => Err(ApiError::not_found(format!(
            "template {name:?} not found (known templates: {KNOWN_TEMPLATES})"
        ))),
    }
}

/// The template name reported for a sandbox record's `language`.
pub fn template_of(language: &str) -> &str {
    language
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_map_to_images() {
        assert_eq!(resolve("base").unwrap().language, "base");
        assert_eq!(resolve("python").unwrap().language, "python");
        assert_eq!(resolve("node").unwrap().language, "javascript");
        assert_eq!(resolve("javascript").unwrap().language, "javascript");
        assert_eq!(resolve("Ruby").unwrap().language, "ruby");
        assert_eq!(resolve("golang").unwrap().language, "golang");
        let t = resolve(DEFAULT_TEMPLATE).unwrap();
        assert_eq!((t.cpus, t.mem_mib), (1, 512));
        for l in ["base", "python", "javascript", "ruby", "golang"] {
            assert!(parse_language(l).is_ok(), "{l} must be a hearth image");
        }
    }

    #[test]
    fn unknown_templates_are_404_naming_the_known_ones() {
        for bad in ["cobol", "", "code-interpreter-v1", "go"] {
            let e = resolve(bad).unwrap_err();
            assert_eq!(e.status.as_u16(), 404, "{bad}");
            assert!(e.message.contains(&format!("{bad:?}")), "{}", e.message);
            assert!(e.message.contains(KNOWN_TEMPLATES), "{}", e.message);
        }
    }
}
