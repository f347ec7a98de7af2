//! Scheduled tasks: cron schedules, catch-up and overlap.
