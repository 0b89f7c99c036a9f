"""A group's model claims over HTTP: who may serve which name, who is held out, and spot checks.

- ``GET /api/groups/{group_id}/claims``: the policy, approvals, holds and rules (members).
- ``PUT /api/groups/{group_id}/claims/policy``: ``open`` or ``approved`` (owner).
- ``PUT|DELETE /api/groups/{group_id}/approvals/{agent_id}/{model}``: approve or revoke (owner, admin).
- ``DELETE /api/groups/{group_id}/holds/{agent_id}/{model}``: lift a flag or a park (owner, admin).
- ``PUT /api/groups/{group_id}/model-rules/{model}``: throughput floor and pinned reference (owner, admin).
- ``POST /api/groups/{group_id}/spot-checks``: run spot checks now (owner, admin).
- ``GET /api/claim-events``: your agents taken out of routing or put back, newest first.
"""

from __future__ import annotations

from aiohttp import web

from potluck.api.context import HUB
from potluck.api.payloads import body_as, iso, json_response
from potluck.api.schemas.claims import (
    ApprovalView,
    CheckAnswer,
    CheckRoundView,
    ClaimEventList,
    ClaimEventView,
    GroupClaimsView,
    HoldView,
    PolicyBody,
    PolicyView,
    Revocation,
    RuleBody,
    RuleView,
    SpotCheckBody,
    SpotCheckReport,
)
from potluck.api.users import current_user
from potluck.hub.claims import Approval, ModelRule
from potluck.hub.errors import InvalidRequestError


def approval_view(approval: Approval) -> ApprovalView:
    return ApprovalView(
        agent_id=approval.agent_id,
        model=approval.model,
        approved_by=approval.approved_by,
        approved_at=iso(approval.approved_at),
    )


def _rule_view(rule: ModelRule) -> RuleView:
    return RuleView(
        model=rule.model,
        min_tokens_per_s=rule.min_tokens_per_s,
        reference_prompt=rule.reference_prompt,
        reference_answer=rule.reference_answer,
    )


async def get_claims(request: web.Request) -> web.Response:
    user = await current_user(request)
    claims = await request.app[HUB].claims.of_group(user, request.match_info["group_id"])
    return json_response(
        GroupClaimsView(
            policy=claims.policy,
            approvals=[approval_view(a) for a in claims.approvals],
            holds=[HoldView.of(h) for h in claims.holds],
            rules=[_rule_view(r) for r in claims.rules],
        )
    )


async def set_policy(request: web.Request) -> web.Response:
    user = await current_user(request)
    group_id = request.match_info["group_id"]
    body = await body_as(request, PolicyBody, param="policy")
    policy = await request.app[HUB].claims.set_policy(user, group_id, body.policy)
    return json_response(PolicyView(group_id=group_id, policy=policy))


async def approve(request: web.Request) -> web.Response:
    user = await current_user(request)
    info = request.match_info
    approval = await request.app[HUB].claims.approve(user, info["group_id"], info["agent_id"], info["model"])
    return json_response(approval_view(approval))


async def revoke(request: web.Request) -> web.Response:
    user = await current_user(request)
    info = request.match_info
    await request.app[HUB].claims.revoke(user, info["group_id"], info["agent_id"], info["model"])
    return json_response(Revocation(agent_id=info["agent_id"], model=info["model"]))


async def lift(request: web.Request) -> web.Response:
    user = await current_user(request)
    info = request.match_info
    await request.app[HUB].claims.lift(user, info["group_id"], info["agent_id"], info["model"])
    return json_response(Revocation(agent_id=info["agent_id"], model=info["model"]))


async def put_rule(request: web.Request) -> web.Response:
    user = await current_user(request)
    body = await body_as(request, RuleBody)
    if (body.reference_prompt is None) != (body.reference_answer is None):
        raise InvalidRequestError("Give `reference_prompt` and `reference_answer` together", param="reference_answer")
    reference = None
    if body.reference_prompt is not None and body.reference_answer is not None:
        reference = (body.reference_prompt, body.reference_answer)
    rule = await request.app[HUB].claims.set_rule(
        user,
        request.match_info["group_id"],
        request.match_info["model"],
        min_tokens_per_s=body.min_tokens_per_s,
        reference=reference,
    )
    return json_response(_rule_view(rule))


async def spot_check(request: web.Request) -> web.Response:
    user = await current_user(request)
    group_id = request.match_info["group_id"]
    body = await body_as(request, SpotCheckBody)
    hub = request.app[HUB]
    await hub.claims.require_manager(user, group_id)
    rounds = [await hub.spot_checks.check(group_id, body.model) for _ in range(body.rounds)]
    return json_response(
        SpotCheckReport(
            model=body.model,
            rounds=[
                CheckRoundView(
                    mode=r.mode,
                    answers=[
                        CheckAnswer(agent_id=a.agent_id, text=a.text, agrees=a.agrees, error=a.error) for a in r.answers
                    ],
                    flagged=list(r.flagged),
                )
                for r in rounds
            ],
            flagged=[a for r in rounds for a in r.flagged],
        )
    )


async def claim_events(request: web.Request) -> web.Response:
    user = await current_user(request)
    events = await request.app[HUB].claims.events_of(user)
    return json_response(ClaimEventList(events=[ClaimEventView.of(e) for e in events]))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/groups/{group_id}/claims", get_claims)
    app.router.add_put("/api/groups/{group_id}/claims/policy", set_policy)
    app.router.add_put("/api/groups/{group_id}/approvals/{agent_id}/{model:.+}", approve)
    app.router.add_delete("/api/groups/{group_id}/approvals/{agent_id}/{model:.+}", revoke)
    app.router.add_delete("/api/groups/{group_id}/holds/{agent_id}/{model:.+}", lift)
    app.router.add_put("/api/groups/{group_id}/model-rules/{model:.+}", put_rule)
    app.router.add_post("/api/groups/{group_id}/spot-checks", spot_check)
    app.router.add_get("/api/claim-events", claim_events)
