//! A complete mediator plugin: every message sent comes straight back from `receive`.
//! Build with `cargo build -p plexus-plugin-sdk --example echo`.

use plexus_plugin_sdk::{export_mediator, log, MediatorPlugin, Message, Outcome, PluginError};
use std::collections::VecDeque;
use std::time::Duration;

struct Echo {
    queue: VecDeque<Message>,
    next_id: u64,
}

impl MediatorPlugin for Echo {
    const NAME: &'static str = "echo";

    fn create(settings: &str) -> Result<Self, PluginError> {
        if !settings.trim().is_empty() && settings.trim() != "{}" {
            return Err(PluginError::Config("echo takes no settings".into()));
        }
        Ok(Echo {
            queue: VecDeque::new(),
            next_id: 0,
        })
    }

    fn send(&mut self, to: &str, sealed: &[u8]) -> Result<(), PluginError> {
        self.next_id += 1;
        log::info!("echoing {} bytes for {to}", sealed.len());
        let id = self.next_id.to_string();
        self.queue.push_back(Message {
            id,
            from: to.into(),
            sealed: sealed.to_vec(),
        });
        Ok(())
    }

    fn receive(&mut self, _timeout: Duration) -> Result<Option<Message>, PluginError> {
        Ok(self.queue.pop_front())
    }

    fn acknowledge(&mut self, _id: &str, _outcome: Outcome) -> Result<(), PluginError> {
        Ok(())
    }
}

export_mediator!(Echo);
