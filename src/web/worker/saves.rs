//! The runs kept in the browser, from the worker (IndexedDB is there in workers too): every run
//! is saved every few seconds and whenever it pauses or ends, listed for the page, resumed
//! from where it was saved, or deleted. A failed save is reported and training goes on.

use super::runner::Runner;
use super::{error, note, post, Want};
use crate::io::local_time;
use crate::store;
use tabcnn::recipe::{DatasetChoice, Hyper, Settings};
use tabcnn::saved::{snapshot_bytes, snapshot_from_bytes, snapshot_key, SavedRun};
use tabcnn::timeline::{max_snapshots, Snapshot, Timeline};
use tabcnn::train::{Checkpoint, TrainError};
use tabcnn::wire::{FromWorker, RunState};
use web_time::Instant;

/// A run saved this recently may be training in another tab: its timeline is not dropped.
const RECENT_MS: f64 = 10.0 * 60_000.0;

fn runs_status(text: String) {
    post(FromWorker::RunsStatus { text, saved: None });
}

impl Runner {
    /// Open the browser's storage and list the saved runs; offer to resume the newest
    /// unfinished one.
    pub(super) async fn open_store(&mut self) {
        let db = match store::open().await {
            Ok(db) => db,
            Err(e) => return runs_status(format!("{e}: runs are not kept in this browser")),
        };
        match store::all(&db, store::RUNS).await {
            Ok(list) => {
                // Every stored record is listed, by the key it is stored under: one this
                // version cannot read is shown with why, and can be deleted.
                self.runs.extend(list.iter().map(|(key, bytes)| SavedRun::from_stored(key, bytes)));
                let bad = self.runs.iter().filter(|r| r.problem.is_some()).count();
                if bad > 0 {
                    runs_status(format!("{bad} saved run(s) could not be read (damaged, or saved by another version of this page): they are listed with why, to delete"));
                }
            }
            Err(e) => runs_status(format!("reading the saved runs failed: {e}")),
        }
        self.runs.sort_by(|a, b| b.saved_ms.total_cmp(&a.saved_ms));
        self.db = Some(db);
        self.send_runs();
        if let Some(r) = self.runs.iter().find(|r| !r.done && r.problem.is_none()) {
            let text = format!("Your run from {} ({}) stopped at epoch {}/{}, step {}.", local_time(r.started_ms), r.label(), r.at.0.min(r.epochs), r.epochs, r.at.2);
            post(FromWorker::ResumeOffer { offer: Some((r.id.clone(), text)) });
        }
    }

    /// The run list for the page (summaries: no training state).
    pub(super) fn send_runs(&self) {
        let runs = self.runs.iter().map(|r| SavedRun { checkpoint: None, ..r.clone() }).collect();
        post(FromWorker::Runs { runs, current: self.run_id.clone() });
    }

    /// Save the run if it has trained since its last save (it paused, ended or failed).
    pub(super) async fn save_if_behind(&mut self) -> Result<(), TrainError> {
        let behind = match (&self.session, &self.run_id) {
            (Some(s), Some(_)) => self.saved_step != Some(s.global_step()),
            _ => false,
        };
        if behind {
            let ck = self.session.as_mut().expect("checked").checkpoint().await?;
            self.save(&ck).await;
        }
        Ok(())
    }

    /// Keep the run in the browser: summary and whole state in one transaction. A failure
    /// (storage full, private window) is reported; training goes on.
    pub(super) async fn save(&mut self, ck: &Checkpoint) {
        let (Some(db), Some(id), Some(s), Some(d)) = (&self.db, self.run_id.clone(), &self.session, &self.data) else { return };
        if self.claims.as_ref().is_some_and(|c| c.elsewhere(&id)) {
            return runs_status(format!("{id} is being trained and saved in another tab of this page: this tab no longer saves it (its training here goes on, unsaved)"));
        }
        // Never save what a resume would refuse (weights gone non-finite right after a diverging
        // update, before the divergence is read back): the last good save stays.
        if let Err(why) = ck.check(s.engine.params_len(), &s.engine.network_name(), s.engine.batch(), s.engine.train_len()) {
            return runs_status(format!("not saved at step {}: {why} (the save before it is kept)", ck.global_step));
        }
        let mut settings = self.ctl.borrow().settings.clone();
        settings.hyper = self.run_hyper.clone();
        settings.hyper.epochs = s.hyper.epochs;
        if let Some((dataset, limit)) = self.data_key {
            (settings.dataset, settings.limit) = (dataset, limit);
        }
        settings.autostart = false;
        let run = SavedRun {
            id,
            query: settings.to_query(),
            dataset: d.description.clone(),
            started_ms: self.run_started_ms,
            saved_ms: js_sys::Date::now(),
            epochs: s.hyper.epochs,
            curves: self.curves.clone(),
            // Not a copy: the state is encoded from `ck` (`state_bytes`).
            checkpoint: None,
            at: (ck.epoch, ck.epoch_step, ck.global_step),
            // The session's end only when this is its position (not a resume point behind it).
            done: s.done() && ck.global_step == s.global_step(),
            snapshots: self.timeline.steps(),
            stored_bytes: 0,
            history_bytes: 0,
            problem: None,
        };
        let weights = s.engine.params_len();
        let counted = |mut r: SavedRun| {
            r.count_bytes(weights, Some(ck));
            r
        };
        self.last_save = Instant::now();
        // The timeline's snapshots not stored yet, and those it has thinned out since.
        let new_snaps: Vec<(String, Vec<u8>)> =
            self.timeline.snaps.iter().filter(|k| !self.stored_snaps.contains(&k.step)).map(|k| (snapshot_key(&run.id, k.step), snapshot_bytes(&k.params))).collect();
        let gone_snaps: Vec<String> = self.stored_snaps.iter().filter(|&&step| self.timeline.at(step).is_none()).map(|&step| snapshot_key(&run.id, step)).collect();
        // First the state the run resumes from, on its own (with the kept steps already
        // stored): a store too full for the new snapshots must not lose it. Then the new
        // snapshots, with the list that names them.
        let kept = counted(SavedRun { snapshots: self.timeline.steps().into_iter().filter(|s| self.stored_snaps.contains(s)).collect(), ..run.clone() });
        let mut put = store::put(db, &run.id, &kept.to_bytes(false), &kept.state_bytes(ck), &[], &gone_snaps).await;
        if put.as_ref().is_err_and(|e| e.contains("QuotaExceeded")) {
            // Full (the quota, usually reached by timelines): the other runs' snapshots go (a
            // transaction that only deletes is never refused for space), and the state is tried
            // once more. A run's state is never dropped for space.
            let dropped = self.drop_histories(0, true).await;
            let db = self.db.as_ref().expect("checked");
            if dropped > 0 {
                put = store::put(db, &run.id, &kept.to_bytes(false), &kept.state_bytes(ck), &[], &gone_snaps).await;
            }
        }
        let db = self.db.as_ref().expect("checked");
        let mut stored = kept.snapshots.clone();
        let mut timeline_lost = None;
        let run = counted(run);
        if put.is_ok() && !new_snaps.is_empty() {
            match store::put(db, &run.id, &run.to_bytes(false), &run.state_bytes(ck), &new_snaps, &[]).await {
                Ok(()) => stored = run.snapshots.clone(),
                Err(e) => timeline_lost = Some(e),
            }
        }
        self.shares.save_ms += self.last_save.elapsed().as_secs_f64() * 1e3;
        let run = counted(SavedRun { snapshots: stored.clone(), ..run });
        if put.is_ok() {
            self.stored_snaps = stored;
        }
        match put {
            Ok(()) => {
                self.saved_step = Some(ck.global_step);
                let mut text = format!("saved in this browser at step {} ({})", ck.global_step, local_time(run.saved_ms));
                if let Some(e) = timeline_lost {
                    text += &format!("; {} new kept step(s) of its timeline are not ({e})", new_snaps.len());
                }
                post(FromWorker::RunsStatus { text, saved: Some((run.id.clone(), ck.global_step)) });
                let summary = SavedRun { checkpoint: None, ..run };
                self.runs.retain(|r| r.id != summary.id);
                self.runs.insert(0, summary.clone());
                post(FromWorker::RunSaved { run: summary, current: self.run_id.clone() });
                self.rewrite_stale_lists().await;
                let usage = store::estimate().await;
                self.drop_histories(tabcnn::saved::history_budget(usage.map(|u| u.1)), false).await;
                post(FromWorker::Storage { usage });
            }
            Err(e) => runs_status(format!("{e}: this run is not kept (training goes on)")),
        }
    }

    /// Keep the saved runs' timelines within `budget` bytes together: the least recently
    /// saved other runs' timelines go first (their states stay: each still resumes), and the
    /// run list says so. A run saved in the last RECENT_MS may be training in another tab: its
    /// timeline stays. `delete_only` (the store is full) deletes the snapshots alone and leaves
    /// the runs' lists to be rewritten after the next save. How many went.
    pub(super) async fn drop_histories(&mut self, budget: u64, delete_only: bool) -> usize {
        let now = js_sys::Date::now();
        let keep = |r: &SavedRun| Some(r.id.as_str()) == self.run_id.as_deref() || now - r.saved_ms < RECENT_MS || self.history_kept.contains(&r.id);
        let ids = tabcnn::saved::histories_to_drop(&self.runs, budget, &keep);
        let mut dropped = 0;
        let mut failed = Vec::new();
        for id in &ids {
            match self.drop_history(id, delete_only).await {
                Ok(()) => dropped += 1,
                Err(e) => {
                    // Not tried again until the page is reloaded.
                    self.history_kept.push(id.clone());
                    failed.push(e);
                }
            }
        }
        if !ids.is_empty() {
            let mut text = format!(
                "the timelines (kept weights) of {dropped} older run(s) were removed to keep saved timelines under {:.0} MB; their training states are kept, so each still resumes",
                budget as f64 / 1e6
            );
            if !failed.is_empty() {
                text += &format!("; {} could not be removed ({})", failed.len(), failed.join("; "));
            }
            runs_status(text);
        }
        dropped
    }

    /// The lists of runs whose snapshots went while the store was full, rewritten now.
    async fn rewrite_stale_lists(&mut self) {
        for id in std::mem::take(&mut self.stale_lists) {
            if let Err(e) = self.drop_history(&id, false).await {
                web_sys::console::info_1(&format!("tabcnn: the list of kept steps of {id} stays as it was: {e}").into());
            }
        }
    }

    /// Drop one saved run's timeline: its snapshots deleted and its summary and state rewritten
    /// to list none, in one transaction, and only if it is still the save this tab listed (a
    /// newer save, from another tab, is left alone).
    async fn drop_history(&mut self, id: &str, delete_only: bool) -> Result<(), String> {
        let db = self.db.as_ref().ok_or("no storage")?;
        let listed = self.runs.iter().find(|r| r.id == id).map(|r| r.saved_ms);
        let rewritten = std::rc::Rc::new(std::cell::RefCell::new(None));
        let (out, key) = (rewritten.clone(), id.to_string());
        let check = move |bytes: &[u8]| {
            let mut r = SavedRun::from_stored(&key, bytes);
            if r.problem.is_some() || Some(r.saved_ms) != listed {
                return None;
            }
            let weights = r.checkpoint.as_ref().map_or(0, |c| c.params.len());
            r.snapshots.clear();
            r.count_bytes(weights, None);
            let bytes = (r.to_bytes(false), r.to_bytes(true));
            *out.borrow_mut() = Some(SavedRun { checkpoint: None, ..r });
            Some(bytes)
        };
        if !store::drop_history_if(db, id, delete_only, check).await? {
            return Err(format!("{id} was saved again since this page listed it (another tab may be training it), or is gone"));
        }
        let summary = rewritten.borrow_mut().take().ok_or("no summary")?;
        if delete_only {
            self.stale_lists.push(id.to_string());
        }
        if let Some(old) = self.runs.iter_mut().find(|o| o.id == id) {
            *old = summary.clone();
        }
        post(FromWorker::RunSaved { run: summary, current: self.run_id.clone() });
        Ok(())
    }

    /// Read a saved run and switch to its settings and dataset; it resumes once that dataset
    /// is loaded (at once when it already is).
    pub(super) async fn load_saved(&mut self, id: &str) {
        let Some(db) = &self.db else { return };
        let run = match store::get(db, store::STATES, id).await {
            Ok(Some(b)) => {
                let r = SavedRun::from_stored(id, &b);
                r.problem.clone().map_or(Ok(r), Err)
            }
            Ok(None) => Err(format!("run {id} is no longer saved in this browser")),
            Err(e) => Err(format!("reading run {id} failed: {e}")),
        };
        let run = match run {
            Ok(r) if r.checkpoint.is_some() => r,
            Ok(_) => return error(&format!("run {id}: its training state is missing")),
            Err(e) => return error(&e),
        };
        let (settings, _) = Settings::from_query(&run.query);
        {
            let mut k = self.ctl.borrow_mut();
            let engine = k.settings.engine;
            k.settings = Settings { engine, ..settings.clone() };
            post(FromWorker::Settings { settings: k.settings.clone() });
        }
        post(FromWorker::ResumeOffer { offer: None });
        if settings.dataset == DatasetChoice::File && self.data_key != Some((settings.dataset, settings.limit)) {
            // A dropped archive cannot be fetched: the visitor drops it again, and the run
            // resumes once it is loaded (if its images are the run's).
            error(&format!("run {id} trained on an archive dropped on the page ({}): drop that file here to resume it", run.dataset));
        } else if self.data_key != Some((settings.dataset, settings.limit)) {
            note("loading the saved run's dataset");
            super::dataset::choose(&self.ctl, settings.dataset == DatasetChoice::Full);
        }
        self.pending_resume = Some(run);
    }

    /// Continue the pending saved run from where it was saved: weights, momentum, epoch and
    /// step, order and shuffle stream, curves. It waits paused for Resume.
    pub(super) async fn resume_saved(&mut self) {
        let Some(run) = self.pending_resume.take() else { return };
        let Some(ck) = run.checkpoint.clone() else { return };
        let Some(d) = self.data.clone() else { return };
        if ck.order.len() != d.train.len() {
            error(&format!("run {}: it trained on {} images, the dataset loaded has {}: load the one it used ({})", run.id, ck.order.len(), d.train.len(), run.dataset));
            return;
        }
        self.end_run().await;
        let (settings, _) = Settings::from_query(&run.query);
        self.run_hyper = Hyper { epochs: run.epochs, ..settings.hyper };
        self.resume = Some(ck);
        self.resume_before = None;
        self.curves = run.curves.clone();
        self.run_id = Some(run.id.clone());
        self.run_started_ms = run.started_ms;
        self.saved_step = Some(run.at.2);
        if let Err(e) = self.session().await {
            return self.fail(e).await;
        }
        self.load_timeline(&run).await;
        // An evaluation given up before the save (a Pause during it) is owed: the test curve's
        // last point is behind the last quarter epoch the run passed.
        if let Some(s) = &self.session {
            let passed = (s.epochs_done() * super::runner::EVALS_PER_EPOCH as f64 + 1e-9).floor() / super::runner::EVALS_PER_EPOCH as f64;
            self.eval_owed = passed > 0.0 && self.curves.test_accuracy.last().is_none_or(|p| p.0 + 1e-9 < passed);
        }
        self.state = RunState::Paused;
        self.ctl.borrow_mut().want = Want::Pause;
        note(&format!("resumed {} at epoch {}, step {}: press Resume to go on", run.label(), run.at.0.min(run.epochs), run.at.2));
        self.send_runs();
        self.send_curves(None);
        if let Err(e) = self.refresh_grid().await {
            return self.fail(e).await;
        }
        self.show_metrics();
    }

    /// The resumed run's timeline from the browser: each stored snapshot read and checked
    /// against the network (one missing or damaged is left out, and said).
    async fn load_timeline(&mut self, run: &SavedRun) {
        let (Some(db), Some(s)) = (&self.db, &self.session) else { return };
        let len = s.engine.params_len();
        let (mut snaps, mut lost, mut damaged) = (Vec::new(), Vec::new(), Vec::new());
        for &step in &run.snapshots {
            let key = snapshot_key(&run.id, step);
            match store::get(db, store::SNAPSHOTS, &key).await {
                Ok(Some(b)) => match snapshot_from_bytes(&b, len, &key) {
                    Ok(params) => snaps.push(Snapshot { step, params }),
                    Err(e) => {
                        lost.push(e);
                        damaged.push(key);
                    }
                },
                Ok(None) => lost.push(format!("{key} is missing")),
                Err(e) => lost.push(format!("{key}: {e}")),
            }
        }
        // A damaged record is of no use to anyone: it goes (the next save lists the rest).
        if !damaged.is_empty() {
            if let Err(e) = store::delete_keys(db, store::SNAPSHOTS, &damaged).await {
                lost.push(format!("the damaged ones could not be deleted: {e}"));
            }
        }
        self.stored_snaps = snaps.iter().map(|k| k.step).collect();
        self.timeline = Timeline::from_snapshots(max_snapshots(len), snaps);
        self.send_timeline();
        if !lost.is_empty() {
            runs_status(format!("the timeline of {} lost {} of its {} kept steps ({}); the run itself is whole", run.id, lost.len(), run.snapshots.len(), lost.join("; ")));
        }
    }

    /// The current run's save is of no use (it diverged before its first good point): it goes,
    /// and the run list says so.
    pub(super) async fn forget_saved_run(&mut self) {
        let (Some(db), Some(id)) = (&self.db, self.run_id.clone()) else { return };
        match store::delete(db, &id).await {
            Ok(()) => runs_status(format!("{id} diverged before its first good point: its save is removed")),
            Err(e) => runs_status(format!("{id} diverged before its first good point, and its save could not be removed: {e}")),
        }
        self.runs.retain(|r| r.id != id);
        self.saved_step = None;
        self.stored_snaps.clear();
        self.send_runs();
    }

    /// Delete a saved run (the current one is then no longer kept).
    pub(super) async fn delete_saved(&mut self, id: &str) {
        let Some(db) = &self.db else { return };
        // Every snapshot stored under the run's key goes, listed or not (a damaged record lists none).
        match store::delete(db, id).await {
            Ok(()) => {
                self.runs.retain(|r| r.id != id);
                if self.run_id.as_deref() == Some(id) {
                    // Deleted while it trains: it is no longer kept.
                    self.run_id = None;
                    self.stored_snaps.clear();
                }
                self.send_runs();
            }
            Err(e) => error(&format!("deleting run {id} failed: {e}")),
        }
    }
}
