//! `/asterisk`: info, variables, modules, logging, config.

use super::*;

impl Sim {
    // -----------------------------------------------------------------------------------
    // asterisk
    // -----------------------------------------------------------------------------------

    pub(super) fn r_asterisk(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        match (m, s) {
            ("GET", ["info"]) => {
                let start = time::format_ms(self.cfg.wall_clock_base_ms);
                let all = json!({
                    "build": {"os": "Linux", "kernel": "6.18.44-sim", "machine": "x86_64",
                              "options": "OPTIONAL_API",
                              "date": time::format_plain(self.cfg.wall_clock_base_ms.saturating_sub(467_914)),
                              "user": "root"},
                    "system": {"version": self.cfg.version, "entity_id": self.cfg.asterisk_id},
                    "config": {"name": "", "default_language": self.cfg.language,
                               "setid": {"user": "", "group": ""}},
                    "status": {"startup_time": start, "last_reload_time": start},
                });
                match p.get("only") {
                    Some(only) => {
                        let mut out = Map::new();
                        for k in only.split(',') {
                            let k = k.trim();
                            match all.get(k) {
                                Some(v) => {
                                    out.insert(k.to_string(), v.clone());
                                }
                                None => {
                                    return R::error(
                                        400,
                                        &format!("only: Invalid enum value '{k}'"),
                                    )
                                }
                            }
                        }
                        R::json(200, &Value::Object(out))
                    }
                    None => R::json(200, &all),
                }
            }
            ("GET", ["ping"]) => R::json(
                200,
                &json!({"ping": "pong", "timestamp": self.ts(), "asterisk_id": self.cfg.asterisk_id}),
            ),
            ("GET", ["variable"]) => {
                let Some(v) = p.nonempty("variable") else {
                    return R::error(400, "Variable name is required");
                };
                if v.starts_with("SHELL(") {
                    return R::error(500, "Unable to read provided function");
                }
                let val = v
                    .strip_prefix("GLOBAL(")
                    .and_then(|x| x.strip_suffix(')'))
                    .map(|g| self.system.globals.get(g).cloned())
                    .unwrap_or_else(|| self.system.globals.get(&v).cloned())
                    .unwrap_or_default();
                R::json(200, &json!({ "value": val }))
            }
            ("POST", ["variable"]) => {
                let Some(v) = p.nonempty("variable") else {
                    return R::error(400, "Variable name is required");
                };
                let val = p.get("value").unwrap_or_default();
                self.system.globals.insert(v.clone(), val.clone());
                self.emit_varset(None, &v, &val);
                R::no_content()
            }
            ("GET", ["modules"]) => {
                let list: Vec<Value> = self
                    .system
                    .modules
                    .keys()
                    .map(|n| self.module_json(n))
                    .collect();
                R::json(200, &Value::Array(list))
            }
            (_, ["modules", name]) => self.r_module(m, name),
            ("GET", ["logging"]) => {
                let list: Vec<Value> = self
                    .system.log_channels
                    .iter()
                    .map(|(c, t, conf)| {
                        json!({"channel": c, "type": t, "status": "Enabled", "configuration": conf})
                    })
                    .collect();
                R::json(200, &Value::Array(list))
            }
            ("POST", ["logging", name]) => {
                let Some(conf) = p.nonempty("configuration") else {
                    return R::error(400, "Missing parameter configuration");
                };
                if self
                    .system
                    .log_channels
                    .iter()
                    .any(|(c, _, _)| c.ends_with(name))
                {
                    return R::error(409, "Log channel already exists");
                }
                let levels: String = conf
                    .split(',')
                    .map(|l| format!("{} ", l.trim().to_ascii_uppercase()))
                    .collect();
                self.system.log_channels.push((
                    format!("/var/log/asterisk/{name}"),
                    "File".to_string(),
                    levels,
                ));
                R::no_content()
            }
            ("DELETE", ["logging", name]) => {
                let before = self.system.log_channels.len();
                self.system
                    .log_channels
                    .retain(|(c, _, _)| !c.ends_with(name));
                if self.system.log_channels.len() == before {
                    R::error(404, "Log channel does not exist")
                } else {
                    R::no_content()
                }
            }
            ("PUT", ["logging", name, "rotate"]) => {
                if self
                    .system
                    .log_channels
                    .iter()
                    .any(|(c, _, _)| c.ends_with(name))
                {
                    R::no_content()
                } else {
                    R::error(404, "Log channel does not exist")
                }
            }
            (_, ["config", "dynamic", class, _kind, _id]) => {
                R::error(404, &format!("configClass '{class}' not found"))
            }
            _ => not_found_resource(),
        }
    }

    pub(super) fn r_module(&mut self, m: &str, name: &str) -> R {
        let entry = self.system.modules.get(name).cloned();
        let running = entry.as_ref().is_some_and(|e| e.2);
        match m {
            "GET" => match entry {
                Some(e) if e.2 => R::json(200, &self.module_json(name)),
                _ => R::error(404, "Module could not be found in running modules"),
            },
            "POST" => match entry {
                Some(_) if running => R::error(409, "Module is already loaded"),
                Some(e) => {
                    self.system
                        .modules
                        .insert(name.to_string(), (e.0, e.1, true));
                    R::no_content()
                }
                None => R::error(409, "Module could not be loaded properly"),
            },
            "DELETE" => match entry {
                Some(_) if running && (name == "res_stasis.so" || name.starts_with("res_ari")) => {
                    R::error(409, "Module could not be unloaded")
                }
                Some(e) if running => {
                    self.system
                        .modules
                        .insert(name.to_string(), (e.0, e.1, false));
                    R::no_content()
                }
                _ => R::error(404, "Module not found in running modules"),
            },
            "PUT" => match entry {
                Some(_) if running && supports_reload(name) => R::no_content(),
                Some(_) if running => R::error(409, "Module does not support reloading"),
                _ => R::error(404, "Module not found in running modules"),
            },
            _ => method_not_allowed(),
        }
    }

    pub(super) fn module_json(&self, name: &str) -> Value {
        let (d, sl, running) = self.system.modules.get(name).cloned().unwrap_or_default();
        let use_count = match name {
            "app_echo.so" => self
                .channels
                .by_id
                .values()
                .filter(|c| c.app_name == "Echo")
                .count(),
            "res_stasis.so" | "app_stasis.so" => self
                .channels
                .by_id
                .values()
                .filter(|c| c.stasis.is_some())
                .count(),
            _ => 0,
        };
        json!({"name": name, "description": d, "use_count": use_count,
               "status": if running { "Running" } else { "Not Running" }, "support_level": sl})
    }
}

/// Whether a module has a reload callback (`ast_module_reload` answers
/// `AST_MODULE_RELOAD_NOT_IMPLEMENTED` otherwise, which ARI turns into 409). Modules built with
/// `AST_MODULE_INFO_STANDARD` have none: most dialplan applications, functions, codecs,
/// formats, bridge technologies, format attributes, the media channel drivers and the Stasis
/// and per-resource ARI modules. The applications that read a configuration file reload.
/// Core built-ins, other resources, channel drivers, PBX, CDR and CEL modules reload. This
/// is the rule, not Asterisk's per-module truth: a module it misjudges answers 204 or 409
/// where Asterisk answers the other.
fn supports_reload(name: &str) -> bool {
    const APPS_WITH_RELOAD: [&str; 9] = [
        "app_agent_pool.so",
        "app_amd.so",
        "app_confbridge.so",
        "app_followme.so",
        "app_minivm.so",
        "app_playback.so",
        "app_queue.so",
        "app_sla.so",
        "app_voicemail.so",
    ];
    const WITHOUT_RELOAD: [&str; 6] = [
        "chan_audiosocket.so",
        "chan_bridge_media.so",
        "chan_rtp.so",
        "pbx_loopback.so",
        "pbx_realtime.so",
        "pbx_spool.so",
    ];
    if name.starts_with("app_") {
        return APPS_WITH_RELOAD.contains(&name);
    }
    if WITHOUT_RELOAD.contains(&name) {
        return false;
    }
    ![
        "func_",
        "codec_",
        "format_",
        "bridge_",
        "res_format_attr_",
        "res_stasis",
        "res_ari_",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}
