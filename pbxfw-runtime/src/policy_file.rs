//! Editing the policy file for `blacklist add|del` and `trust|untrust`, keeping its comments and
//! layout (TOML through toml_edit; JSON rewritten pretty-printed), and writing it atomically.

use std::path::Path;

use pbxfw_core::Policy;
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};

/// A policy document being edited.
pub enum Doc {
    /// TOML, comments and order kept.
    Toml(DocumentMut),
    /// JSON.
    Json(serde_json::Value),
}

impl Doc {
    /// Parse the file's text; the format follows the file name.
    pub fn parse(text: &str, name: &str) -> Result<Doc, String> {
        if name.ends_with(".json") {
            serde_json::from_str(text)
                .map(Doc::Json)
                .map_err(|e| e.to_string())
        } else {
            text.parse::<DocumentMut>()
                .map(Doc::Toml)
                .map_err(|e| e.to_string())
        }
    }

    /// The text to write back.
    pub fn render(&self) -> String {
        match self {
            Doc::Toml(d) => d.to_string(),
            Doc::Json(v) => format!("{v:#}\n"),
        }
    }

    /// The entries of `[blacklist] entries`, as written.
    pub fn blacklist(&self) -> Vec<String> {
        match self {
            Doc::Toml(d) => d
                .get("blacklist")
                .and_then(|b| b.get("entries"))
                .and_then(Item::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            Doc::Json(v) => v["blacklist"]["entries"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Append a blacklist entry.
    pub fn blacklist_add(&mut self, entry: &str) {
        match self {
            Doc::Toml(d) => {
                if !d.contains_table("blacklist") {
                    d.insert("blacklist", Item::Table(Table::new()));
                }
                let t = d["blacklist"]
                    .as_table_like_mut()
                    .expect("blacklist is a table");
                if t.get("entries").and_then(Item::as_array).is_none() {
                    t.insert("entries", value(Array::new()));
                }
                t.get_mut("entries")
                    .and_then(Item::as_array_mut)
                    .expect("entries is an array")
                    .push(entry);
            }
            Doc::Json(v) => {
                if !v["blacklist"]["entries"].is_array() {
                    v["blacklist"]["entries"] = serde_json::json!([]);
                }
                v["blacklist"]["entries"]
                    .as_array_mut()
                    .unwrap()
                    .push(entry.into());
            }
        }
    }

    /// Remove the blacklist entries for which `same` holds; returns how many.
    pub fn blacklist_remove(&mut self, same: impl Fn(&str) -> bool) -> usize {
        match self {
            Doc::Toml(d) => {
                let Some(a) = d
                    .get_mut("blacklist")
                    .and_then(|b| b.get_mut("entries"))
                    .and_then(Item::as_array_mut)
                else {
                    return 0;
                };
                let before = a.len();
                a.retain(|v| !v.as_str().is_some_and(&same));
                before - a.len()
            }
            Doc::Json(v) => {
                let Some(a) = v["blacklist"]["entries"].as_array_mut() else {
                    return 0;
                };
                let before = a.len();
                a.retain(|v| !v.as_str().is_some_and(&same));
                before - a.len()
            }
        }
    }

    /// Append a `[[networks]]` entry (or an inline table, when the file writes `networks` as
    /// an inline array: its entries are kept either way).
    pub fn network_add(&mut self, source: &str, zone: &str, description: &str) {
        match self {
            Doc::Toml(d) => {
                if let Some(a) = d.get_mut("networks").and_then(Item::as_array_mut) {
                    let mut t = toml_edit::InlineTable::new();
                    t.insert("source", source.into());
                    t.insert("zone", zone.into());
                    t.insert("description", description.into());
                    a.push(t);
                    return;
                }
                if d.get("networks")
                    .and_then(Item::as_array_of_tables)
                    .is_none()
                {
                    d.insert("networks", Item::ArrayOfTables(ArrayOfTables::new()));
                }
                let mut t = Table::new();
                t.insert("source", value(source));
                t.insert("zone", value(zone));
                t.insert("description", value(description));
                d["networks"].as_array_of_tables_mut().unwrap().push(t);
            }
            Doc::Json(v) => {
                if !v["networks"].is_array() {
                    v["networks"] = serde_json::json!([]);
                }
                v["networks"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({
                        "source": source, "zone": zone, "description": description,
                    }));
            }
        }
    }

    /// Remove the `[[networks]]` entries for which `hit(source, zone)` holds; returns how many.
    pub fn networks_remove(&mut self, hit: impl Fn(&str, &str) -> bool) -> usize {
        match self {
            Doc::Toml(d) => {
                if let Some(a) = d.get_mut("networks").and_then(Item::as_array_mut) {
                    let before = a.len();
                    a.retain(|v| {
                        let t = v.as_inline_table();
                        let s = |k| {
                            t.and_then(|t| t.get(k))
                                .and_then(|v| v.as_str())
                                .unwrap_or("")
                        };
                        !hit(s("source"), s("zone"))
                    });
                    return before - a.len();
                }
                let Some(a) = d.get_mut("networks").and_then(Item::as_array_of_tables_mut) else {
                    return 0;
                };
                let before = a.len();
                a.retain(|t| {
                    let s = |k| t.get(k).and_then(Item::as_str).unwrap_or("");
                    !hit(s("source"), s("zone"))
                });
                before - a.len()
            }
            Doc::Json(v) => {
                let Some(a) = v["networks"].as_array_mut() else {
                    return 0;
                };
                let before = a.len();
                a.retain(|n| {
                    !hit(
                        n["source"].as_str().unwrap_or(""),
                        n["zone"].as_str().unwrap_or(""),
                    )
                });
                before - a.len()
            }
        }
    }

    /// The edited document as a policy.
    pub fn policy(&self, name: &str) -> Result<Policy, String> {
        Policy::from_text(&self.render(), name).map_err(|e| e.to_string())
    }
}

/// Write `text` to `path` atomically: a temporary file in the same directory, fsync, rename over
/// the old file, fsync the directory. A crash leaves either the old or the new file.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    // Through a symbolic link to the file it names (a policy kept in a managed directory),
    // keeping its owner, group and mode: an edit changes the text, nothing else.
    let real = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&real)?;
    let dir = real.parent().unwrap_or(Path::new("/"));
    let name = real
        .file_name()
        .map_or_else(|| "policy".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.pbxfw-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(meta.mode() & 0o7777)
            .open(&tmp)?;
        std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
        // The mode again: the umask may have taken bits from the one asked at creation.
        f.set_permissions(meta.permissions())?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &real)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that writes `networks` as an inline array keeps its entries through an edit.
    #[test]
    fn an_inline_networks_array_is_edited_in_place() {
        let text = "networks = [{ source = \"10.0.0.0/8\", zone = \"local\" }]\n";
        let mut doc = Doc::parse(text, "p.toml").unwrap();
        doc.network_add("192.0.2.1", "trusted", "added");
        let out = doc.render();
        assert!(
            out.contains("10.0.0.0/8") && out.contains("192.0.2.1"),
            "{out}"
        );
        assert_eq!(
            doc.networks_remove(|s, z| s == "10.0.0.0/8" && z == "local"),
            1
        );
        let out = doc.render();
        assert!(
            !out.contains("10.0.0.0/8") && out.contains("192.0.2.1"),
            "{out}"
        );
    }

    #[test]
    fn a_write_goes_through_a_link_and_keeps_owner_group_and_mode() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.toml");
        std::fs::write(&real, "# old\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        // A group other than the writer's own (root here, when the tests run as root).
        let _ = std::os::unix::fs::chown(&real, None, Some(100));
        let before = std::fs::metadata(&real).unwrap();
        let link = dir.path().join("pbxfw.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomic(&link, "# new\n").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "# new\n");
        let after = std::fs::metadata(&real).unwrap();
        assert_eq!(after.mode() & 0o7777, 0o640);
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temporary left"
        );
    }

    #[test]
    fn toml_edits_keep_comments() {
        let text = "# my PBX\n[interfaces]\neth0 = \"internet\" # uplink\n";
        let mut d = Doc::parse(text, "p.toml").unwrap();
        d.blacklist_add("192.0.2.1");
        d.network_add("198.51.100.7", "trusted", "added by pbxfw trust");
        let out = d.render();
        assert!(
            out.contains("# my PBX") && out.contains("# uplink"),
            "{out}"
        );
        let v = d.policy("p.toml").unwrap().validate().unwrap();
        assert_eq!(v.blacklist.len(), 1);
        assert_eq!(v.networks.len(), 1);
        assert_eq!(d.blacklist_remove(|e| e == "192.0.2.1"), 1);
        assert_eq!(
            d.networks_remove(|s, z| s == "198.51.100.7" && z == "trusted"),
            1
        );
        assert!(d
            .policy("p.toml")
            .unwrap()
            .validate()
            .unwrap()
            .blacklist
            .is_empty());
    }

    #[test]
    fn json_edits() {
        let mut d = Doc::parse("{\"interfaces\": {\"eth0\": \"local\"}}", "p.json").unwrap();
        d.blacklist_add("2001:db8::/32");
        assert_eq!(d.blacklist(), ["2001:db8::/32"]);
        assert!(d.policy("p.json").unwrap().validate().is_ok());
    }
}
