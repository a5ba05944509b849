//! What the operator console asks of one user's hub on this node, through the user's shard:
//! its sessions and since when ([`Directory::sessions_of`]). Not on a hot path; a user with no
//! hub here has no session. (Closing them is `Directory::disconnect`, in `mod.rs`.)

use actix::prelude::*;

use super::shard::DirectoryShard;
use super::Directory;
use crate::hub::{SessionInfo, UserSessions};
use crate::ids::UserId;

impl Handler<UserSessions> for DirectoryShard {
    type Result = ResponseFuture<Vec<SessionInfo>>;

    fn handle(&mut self, query: UserSessions, _: &mut Context<Self>) -> Self::Result {
        let hub = self.hub_of(&query.user);
        Box::pin(async move {
            match hub {
                // A hub retired meanwhile has no session left.
                Some(hub) => hub.send(query).await.unwrap_or_default(),
                None => Vec::new(),
            }
        })
    }
}

impl Directory {
    /// The sessions `user` has open on this node, in no particular order. Fails only when the
    /// user's shard has stopped (the node is shutting down).
    pub async fn sessions_of(&self, user: &UserId) -> Result<Vec<SessionInfo>, MailboxError> {
        let query = UserSessions { user: user.clone() };
        self.shard_of(user).send(query).await
    }
}
