//! Directory helpers only tests use (feature `test-support`, enabled for `actors/tests`): route
//! one message by user id, and count the hubs, which also waits until every shard has handled
//! what was sent to it before.

use actix::prelude::*;

use super::shard::DirectoryShard;
use super::Directory;
use crate::broker::RouteUser;
use crate::ids::UserId;
use crate::payload::Published;

/// How many hubs a shard holds.
#[derive(Message, Debug)]
#[rtype(result = "usize")]
struct HubCount;

impl Handler<HubCount> for DirectoryShard {
    type Result = usize;

    fn handle(&mut self, _: HubCount, _: &mut Context<Self>) -> usize {
        self.hub_count()
    }
}

impl Directory {
    /// Hands a broker message to the user's hub, if the user has one here (as
    /// [`Directory::route_all`] does for many).
    pub fn route(&self, user: UserId, message: impl Into<Published>) {
        self.route_all([(RouteUser::Id(user), message.into())]);
    }

    /// How many users have a hub on this node, summed over the shards.
    pub async fn hub_count(&self) -> Result<usize, MailboxError> {
        let mut total = 0;
        for shard in self.shards.iter() {
            total += shard.send(HubCount).await?;
        }
        Ok(total)
    }
}
