//! `/mailboxes`: external MWI mailboxes (`res_ari_mailboxes`).

use super::*;

impl Sim {
    pub(super) fn r_mailboxes(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        match (m, s) {
            ("GET", []) => {
                let list: Vec<Value> = self
                    .system
                    .mailboxes
                    .iter()
                    .map(|(name, counts)| mailbox_json(name, *counts))
                    .collect();
                R::json(200, &Value::Array(list))
            }
            ("GET", [name]) => match self.system.mailboxes.get(*name) {
                Some(counts) => R::json(200, &mailbox_json(name, *counts)),
                None => R::error(404, "Mailbox is does not exist"),
            },
            ("PUT", [name]) => {
                let old = match p.int("oldMessages") {
                    Ok(Some(n)) => n,
                    Ok(None) => return R::error(400, "Missing parameter oldMessages"),
                    Err(e) => return e,
                };
                let new = match p.int("newMessages") {
                    Ok(Some(n)) => n,
                    Ok(None) => return R::error(400, "Missing parameter newMessages"),
                    Err(e) => return e,
                };
                self.system
                    .mailboxes
                    .insert((*name).to_string(), (old, new));
                R::no_content()
            }
            ("DELETE", [name]) => match self.system.mailboxes.remove(*name) {
                Some(_) => R::no_content(),
                None => R::error(404, "Mailbox does not exist"),
            },
            (_, [] | [_]) => method_not_allowed(),
            _ => not_found_resource(),
        }
    }
}

fn mailbox_json(name: &str, (old, new): (i64, i64)) -> Value {
    json!({"name": name, "old_messages": old, "new_messages": new})
}
