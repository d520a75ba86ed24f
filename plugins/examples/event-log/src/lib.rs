//! An event sink: logs each task's result and the run's summary through cairn.

use cairn_pdk::api::{Capability, Describe, Event, EventBatch, PluginError};
use cairn_pdk::{log, plugin};

fn describe() -> Describe {
    let mut describe = cairn_pdk::describe(
        "event-log",
        env!("CARGO_PKG_VERSION"),
        &[Capability::Events],
    );
    describe.description = "logs each task's result and the run's summary".into();
    describe
}

fn on_events(batch: EventBatch) -> Result<(), PluginError> {
    for event in &batch.events {
        match event {
            Event::TaskFinished {
                task,
                status,
                duration_ms,
                cache,
                ..
            } => {
                log::info(format!(
                    "{task}: {status} in {duration_ms} ms (cache {cache})"
                ));
            }
            Event::RunFinished {
                exit_code,
                succeeded,
                failed,
                skipped,
                ..
            } => {
                log::info(format!("run: {succeeded} succeeded, {failed} failed, {skipped} not run, exit {exit_code}"));
            }
            _ => {}
        }
    }
    Ok(())
}

plugin! { describe: describe, events: on_events }

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_pdk::api::Reply;
    use cairn_pdk::testing;

    #[test]
    fn finished_tasks_are_logged() {
        let batch = cairn_pdk::serde_json::json!({"events": [{"type": "task_finished", "at_ms": 1, "task": "build",
            "status": "succeeded", "exit_code": 0, "duration_ms": 12, "cache": "miss"}]});
        assert!(matches!(testing::call(on_events, &batch), Reply::Ok(())));
        let logs = testing::take_logs();
        assert_eq!(logs[0].message, "build: succeeded in 12 ms (cache miss)");
    }
}
