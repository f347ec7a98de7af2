//! `state.sqlite`: the live runs, written synchronously before a run counts as started,
//! so that the next paiosd can end what a killed one left behind (promise 3). Kept apart
//! from the ledger so the ledger's queue can never delay or lose a live-run record.
