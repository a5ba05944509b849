//! A session's deadlines: the heartbeat (a ping every interval; closed 4008 when one goes
//! unanswered), the idle deadline (closed 4008 when the client sends nothing at all) and the
//! token expiry (closed 4001). Each is a timer on the session's own context.

use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;

use super::Session;
use crate::close::CloseCode;
use crate::wire::OutFrame;

/// A token expiring further away than this arms no expiry timer: no socket lives that long, and
/// timer arithmetic stays far from overflow.
const FAR_FUTURE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl Session {
    /// Arms every deadline; called once the session has started.
    pub(super) fn arm_deadlines(&self, ctx: &mut Context<Self>) {
        self.schedule_heartbeat(ctx);
        self.schedule_idle_check(ctx, self.params.config.idle_timeout);
        self.schedule_expiry(ctx);
    }

    fn schedule_heartbeat(&self, ctx: &mut Context<Self>) {
        let interval = self.params.config.heartbeat_interval;
        ctx.run_interval(interval, |session, ctx| session.send_ping(ctx));
    }

    fn send_ping(&mut self, ctx: &mut Context<Self>) {
        if self.ping_sent_at.is_none() {
            let sent_at = Instant::now();
            self.ping_sent_at = Some(sent_at);
            let timeout = self.params.config.heartbeat_timeout;
            ctx.run_later(timeout, move |session, ctx| {
                if session.ping_sent_at == Some(sent_at) {
                    session.close(ctx, CloseCode::Timeout, "heartbeat lost");
                }
            });
        }
        self.enqueue(ctx, OutFrame::ping());
    }

    fn schedule_idle_check(&self, ctx: &mut Context<Self>, after: Duration) {
        ctx.run_later(after, |session, ctx| {
            let idle = session.params.config.idle_timeout;
            let quiet = session.last_heard.elapsed();
            if quiet >= idle {
                session.close(ctx, CloseCode::Timeout, "idle timeout");
            } else {
                session.schedule_idle_check(ctx, idle - quiet);
            }
        });
    }

    /// Arms the 4001 close for when the token expires, unless that is [`FAR_FUTURE`] or more
    /// away (or never).
    fn schedule_expiry(&self, ctx: &mut Context<Self>) {
        if !self.params.config.close_on_expiry {
            return;
        }
        let Some(expires_at) = self.params.expires_at else {
            return;
        };
        let left = expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if left >= FAR_FUTURE {
            return;
        }
        ctx.run_later(left, |session, ctx| {
            session.close(ctx, CloseCode::TokenExpired, "token expired");
        });
    }
}
