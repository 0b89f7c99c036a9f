"""The user API (``/api/...``): login, personal tokens, groups, members and invites.

Authenticated with ``Authorization: Bearer <token>`` from ``POST /api/login`` or ``POST /api/tokens``.
``POST /admin/users`` (admin token) creates accounts.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from potluck.api.admin import require_admin
from potluck.api.browser import credential
from potluck.api.context import HUB
from potluck.api.payloads import bearer, body_as, iso, json_response
from potluck.api.schemas.accounts import (
    Account,
    CreatedUserKey,
    LoggedOut,
    Login,
    NewKey,
    NewUser,
    PersonalToken,
    Session,
    UserKeyInfo,
    UserKeyList,
)
from potluck.api.schemas.admin import AgentToken
from potluck.api.schemas.agents import (
    AgentControls,
    ControlsView,
    GroupRef,
    ModelState,
    OwnAgent,
    OwnAgentList,
    Sharing,
)
from potluck.api.schemas.claims import HoldView
from potluck.api.schemas.common import AgentState, Named, Revoked, RevokedKey
from potluck.api.schemas.groups import (
    CreatedInvite,
    GroupDeleted,
    GroupLeft,
    GroupName,
    GroupSettings,
    GroupView,
    GroupWithRole,
    InviteInfo,
    InviteList,
    Joined,
    Member,
    MemberList,
    MemberRemoved,
    MemberRole,
    MemberRoleSet,
    Membership,
    MembershipList,
    NewInvite,
    Redeem,
)
from potluck.hub.accounts import User
from potluck.hub.groups import Group
from potluck.hub.keys import KeyOptions
from potluck.hub.services import HubServices


async def current_user(request: web.Request) -> User:
    """The signed-in user: by bearer token, or by browser session cookie (with CSRF checks on state changes)."""
    return await request.app[HUB].accounts.authenticate(credential(request))


async def create_user(request: web.Request) -> web.Response:
    hub = await require_admin(request)
    body = await body_as(request, NewUser)
    user = await hub.accounts.create_user(body.username, body.password, body.role, rpm=body.rpm, tpm=body.tpm)
    return json_response(Account(id=user.id, username=user.username, role=user.role), 201)


async def login(request: web.Request) -> web.Response:
    body = await body_as(request, Login)
    token, expires_at = await request.app[HUB].accounts.login(body.username, body.password, address=request.remote)
    return json_response(Session(token=token, expires_at=iso(expires_at)))


async def logout(request: web.Request) -> web.Response:
    await request.app[HUB].accounts.logout(bearer(request))
    return json_response(LoggedOut())


async def me(request: web.Request) -> web.Response:
    user = await current_user(request)
    return json_response(Account(id=user.id, username=user.username, role=user.role))


async def create_token(request: web.Request) -> web.Response:
    user = await current_user(request)
    body = await body_as(request, Named)
    token_id, secret = await request.app[HUB].accounts.create_personal_token(user, body.name.strip() or "token")
    return json_response(PersonalToken(id=token_id, token=secret), 201)


async def revoke_token(request: web.Request) -> web.Response:
    user = await current_user(request)
    token_id = request.match_info["token_id"]
    await request.app[HUB].accounts.revoke_token(user, token_id)
    return json_response(Revoked(id=token_id))


async def create_group(request: web.Request) -> web.Response:
    user = await current_user(request)
    group = await request.app[HUB].groups.create(user, (await body_as(request, Named)).name)
    return json_response(GroupName(id=group.id, name=group.name), 201)


async def list_groups(request: web.Request) -> web.Response:
    user = await current_user(request)
    groups = await request.app[HUB].groups.of_user(user)
    return json_response(MembershipList(groups=[Membership(id=g.id, name=g.name, role=role) for g, role in groups]))


async def delete_group(request: web.Request) -> web.Response:
    user = await current_user(request)
    group_id = request.match_info["group_id"]
    await request.app[HUB].groups.delete(user, group_id)
    return json_response(GroupDeleted(id=group_id))


async def list_members(request: web.Request) -> web.Response:
    user = await current_user(request)
    members = await request.app[HUB].groups.members(user, request.match_info["group_id"])
    return json_response(
        MemberList(members=[Member(user_id=m.user_id, username=m.username, role=m.role) for m in members])
    )


async def leave_group(request: web.Request) -> web.Response:
    user = await current_user(request)
    group_id = request.match_info["group_id"]
    await request.app[HUB].groups.leave(user, group_id)
    return json_response(GroupLeft(id=group_id))


async def remove_member(request: web.Request) -> web.Response:
    user = await current_user(request)
    group_id, member_id = request.match_info["group_id"], request.match_info["user_id"]
    await request.app[HUB].groups.remove_member(user, group_id, member_id)
    return json_response(MemberRemoved(group_id=group_id, user_id=member_id))


async def set_member_role(request: web.Request) -> web.Response:
    user = await current_user(request)
    group_id, member_id = request.match_info["group_id"], request.match_info["user_id"]
    role = (await body_as(request, MemberRole)).role
    await request.app[HUB].groups.set_member_role(user, group_id, member_id, role)
    return json_response(MemberRoleSet(group_id=group_id, user_id=member_id, role=role))


async def create_invite(request: web.Request) -> web.Response:
    user = await current_user(request)
    body = await body_as(request, NewInvite)
    invite, code = await request.app[HUB].invites.create(
        user, request.match_info["group_id"], body.max_uses, body.expires_in_s
    )
    return json_response(
        CreatedInvite(id=invite.id, code=code, max_uses=invite.max_uses, expires_at=iso(invite.expires_at)), 201
    )


async def list_invites(request: web.Request) -> web.Response:
    user = await current_user(request)
    invites = await request.app[HUB].invites.of_group(user, request.match_info["group_id"])
    return json_response(
        InviteList(
            invites=[
                InviteInfo(id=i.id, max_uses=i.max_uses, uses=i.uses, expires_at=iso(i.expires_at), revoked=i.revoked)
                for i in invites
            ]
        )
    )


async def revoke_invite(request: web.Request) -> web.Response:
    user = await current_user(request)
    group_id, invite_id = request.match_info["group_id"], request.match_info["invite_id"]
    await request.app[HUB].invites.revoke(user, group_id, invite_id)
    return json_response(Revoked(id=invite_id))


async def redeem_invite(request: web.Request) -> web.Response:
    user = await current_user(request)
    group_id = await request.app[HUB].invites.redeem(user, (await body_as(request, Redeem)).code)
    return json_response(Joined(group_id=group_id))


async def create_key(request: web.Request) -> web.Response:
    """An API key owned by you, for some or all of your groups (all: follows your memberships)."""
    hub = request.app[HUB]
    user = await current_user(request)
    body = await body_as(request, NewKey)
    options = KeyOptions(
        body.models, body.expires_in_s, body.rpm, body.tpm, body.max_concurrency, body.priority, body.prefer_own
    )
    created = await hub.keys.create(user, body.name, body.groups, options)
    key = created.key
    return json_response(
        CreatedUserKey(
            id=key.id,
            name=key.name,
            key=created.secret,
            groups=key.groups,
            models=key.models,
            expires_at=iso(key.expires_at),
            rpm=key.rpm,
            tpm=key.tpm,
            max_concurrency=key.max_concurrency,
            priority=key.priority,
            prefer_own=key.prefer_own,
            created_at=iso(key.created_at),
        ),
        201,
    )


async def list_keys(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    user = await current_user(request)
    keys = await hub.keys.of_user(user)
    return json_response(
        UserKeyList(
            keys=[
                UserKeyInfo(
                    id=k.id,
                    name=k.name,
                    prefix=k.prefix,
                    created_at=iso(k.created_at),
                    revoked_at=iso(k.revoked_at),
                    groups=k.groups,
                    last_used_at=iso(k.last_used_at),
                )
                for k in keys
            ]
        )
    )


async def revoke_key(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    user = await current_user(request)
    revoked = await hub.keys.revoke_own(user, request.match_info["key_id"])
    return json_response(RevokedKey(id=revoked.id, revoked_at=iso(revoked.revoked_at)))


async def create_agent_token(request: web.Request) -> web.Response:
    """A one-time enrolment token; the agent that uses it belongs to you."""
    hub = request.app[HUB]
    user = await current_user(request)
    name = (await body_as(request, Named)).name.strip() or "agent"
    token = await hub.agents.create_token(name, owner_id=user.id)
    return json_response(AgentToken(id=token.id, name=token.name, token=token.token), 201)


async def list_agents(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    user = await current_user(request)
    mine = await hub.agents.owned_by(user)
    agents = []
    for agent in mine:
        session = hub.registry.sessions.get(agent.id)
        agents.append(
            OwnAgent(
                id=agent.id,
                name=agent.name,
                state=_state(hub, agent.id),
                groups=sorted(hub.access.groups_of_agent(agent.id)),
                models=[] if session is None else [ModelState(id=m.id, hot=m.hot) for m in session.models],
                holds=[HoldView.of(h) for h in hub.claims.view.holds_of(agent.id)],
            )
        )
    return json_response(OwnAgentList(agents=agents))


def _state(hub: HubServices, agent_id: str) -> AgentState:
    """``online``, ``draining`` or ``offline``: the same words as ``/admin/agents``."""
    if agent_id not in hub.registry.sessions:
        return "offline"
    slots = hub.registry.scheduler.agent(agent_id)
    return "draining" if slots is not None and slots.draining else "online"


async def share_agent(request: web.Request) -> web.Response:
    user = await current_user(request)
    agent_id = request.match_info["agent_id"]
    group_id = (await body_as(request, GroupRef)).group_id
    await request.app[HUB].agents.share(user, agent_id, group_id)
    return json_response(Sharing(agent_id=agent_id, group_id=group_id, shared=True))


async def unshare_agent(request: web.Request) -> web.Response:
    user = await current_user(request)
    agent_id, group_id = request.match_info["agent_id"], request.match_info["group_id"]
    await request.app[HUB].agents.unshare(user, agent_id, group_id)
    return json_response(Sharing(agent_id=agent_id, group_id=group_id, shared=False))


async def update_agent(request: web.Request) -> web.Response:
    """Owner controls: ``{"paused"?, "schedule"?, "own_requests_only"?, "own_requests_first"?}``."""
    user = await current_user(request)
    agent_id = request.match_info["agent_id"]
    body = await body_as(request, AgentControls)
    changes = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not msgspec.UNSET}
    controls = await request.app[HUB].agents.update_controls(user, agent_id, changes)
    return json_response(
        ControlsView(
            id=agent_id,
            paused=controls.paused,
            own_requests_only=controls.own_requests_only,
            own_requests_first=controls.own_requests_first,
            schedule=controls.schedule,
        )
    )


def group_view(group: Group) -> GroupView:
    return msgspec.convert(group, GroupView, from_attributes=True)


async def get_group(request: web.Request) -> web.Response:
    """A group you are in, with its settings and your role."""
    user = await current_user(request)
    group, role = await request.app[HUB].groups.get(user, request.match_info["group_id"])
    return json_response(GroupWithRole(**msgspec.structs.asdict(group_view(group)), role=role))


async def update_group(request: web.Request) -> web.Response:
    user = await current_user(request)
    group_id = request.match_info["group_id"]
    body = await body_as(request, GroupSettings)
    changes = {f: getattr(body, f) for f in body.__struct_fields__ if getattr(body, f) is not msgspec.UNSET}
    group = await request.app[HUB].groups.update(user, group_id, changes)
    return json_response(group_view(group))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/admin/users", create_user)
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)
    app.router.add_get("/api/me", me)
    app.router.add_post("/api/tokens", create_token)
    app.router.add_delete("/api/tokens/{token_id}", revoke_token)
    app.router.add_post("/api/groups", create_group)
    app.router.add_get("/api/groups", list_groups)
    app.router.add_delete("/api/groups/{group_id}", delete_group)
    app.router.add_get("/api/groups/{group_id}/members", list_members)
    app.router.add_post("/api/groups/{group_id}/leave", leave_group)
    app.router.add_delete("/api/groups/{group_id}/members/{user_id}", remove_member)
    app.router.add_patch("/api/groups/{group_id}/members/{user_id}", set_member_role)
    app.router.add_post("/api/groups/{group_id}/invites", create_invite)
    app.router.add_get("/api/groups/{group_id}/invites", list_invites)
    app.router.add_delete("/api/groups/{group_id}/invites/{invite_id}", revoke_invite)
    app.router.add_post("/api/invites/redeem", redeem_invite)
    app.router.add_post("/api/keys", create_key)
    app.router.add_get("/api/keys", list_keys)
    app.router.add_delete("/api/keys/{key_id}", revoke_key)
    app.router.add_post("/api/agent-tokens", create_agent_token)
    app.router.add_get("/api/agents", list_agents)
    app.router.add_patch("/api/agents/{agent_id}", update_agent)
    app.router.add_get("/api/groups/{group_id}", get_group)
    app.router.add_patch("/api/groups/{group_id}", update_group)
    app.router.add_post("/api/agents/{agent_id}/groups", share_agent)
    app.router.add_delete("/api/agents/{agent_id}/groups/{group_id}", unshare_agent)
