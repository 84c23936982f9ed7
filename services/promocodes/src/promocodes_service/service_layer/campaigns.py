"""The campaign use cases: create, read, list and update campaigns.

A campaign's limits are shared by all its codes. Lowering one below what is already granted is
refused (FAILED_PRECONDITION UPDATE_NOT_ALLOWED), and the check is repeated by the conditional
write itself (CampaignRepository.save), so a redemption counted meanwhile cannot slip under it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from promo_libs import errors
from promo_libs.errors import checked
from promo_libs.pagination import page_request
from promocodes_service.domain import rules
from promocodes_service.domain.campaign import (
    CAMPAIGN_FIELDS,
    CAMPAIGN_OUTPUT_FIELDS,
    MAX_DISPLAY_NAME_LENGTH,
    Campaign,
    CampaignRules,
    merged,
)
from promocodes_service.domain.commands import (
    CampaignSpec,
    CreateCampaign,
    ListCampaigns,
    UpdateCampaign,
)
from promocodes_service.domain.model import UpdateNotAllowed
from promocodes_service.domain.ports import CampaignRepository, VersionConflict
from promocodes_service.service_layer.validation import check_id_field, check_money, require_id

_UPDATE_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class CampaignPage:
    campaigns: list[Campaign]
    next_page_token: str


def campaign_not_found(campaign_id: str) -> errors.NotFound:
    return errors.NotFound(
        f"campaign {campaign_id} does not exist", "CAMPAIGN_NOT_FOUND", {"campaign": campaign_id}
    )


def _check_display_name(value: str) -> str:
    if not value.strip():
        raise ValueError("is required")
    if len(value) > MAX_DISPLAY_NAME_LENGTH or not value.isprintable():
        raise ValueError(f"must be 1..{MAX_DISPLAY_NAME_LENGTH} printable characters")
    return value


def _campaign_rules(
    spec: CampaignSpec, violations: errors.Violations, fields: frozenset[str]
) -> CampaignRules:
    """The fields named in `fields` of `spec`, checked; violations under `campaign.`."""
    root = "campaign"
    name = spec.display_name
    if "display_name" in fields:
        name = checked(violations, f"{root}.display_name", _check_display_name, name) or ""
    if "description" in fields:
        checked(violations, f"{root}.description", rules.check_description, spec.description)
    limits: dict[str, int | None] = {}
    for field in ("max_uses", "max_uses_per_user"):
        given = getattr(spec, field)
        limits[field] = (
            checked(violations, f"{root}.{field}", rules.check_limit, given)
            if field in fields and given is not None
            else None
        )
    budget = (
        check_money(violations, f"{root}.budget", spec.budget, 1) if "budget" in fields else None
    )
    return CampaignRules(
        display_name=name,
        description=spec.description,
        max_uses=limits["max_uses"],
        max_uses_per_user=limits["max_uses_per_user"],
        budget=budget.amount_minor if budget else None,
        currency=budget.currency_code if budget else None,
        valid_from=spec.valid_from,
        valid_until=spec.valid_until,
    )


def _check_window(new: CampaignRules, violations: errors.Violations) -> None:
    if new.valid_from and new.valid_until and new.valid_until <= new.valid_from:
        violations.add("campaign.valid_until", "must be after valid_from")


class Campaigns:
    def __init__(
        self,
        campaigns: CampaignRepository,
        new_id: Callable[[], str],
        clock: Callable[[], datetime],
    ) -> None:
        self._campaigns = campaigns
        self._new_id = new_id
        self._clock = clock

    async def create(self, command: CreateCampaign) -> Campaign:
        violations = errors.Violations()
        new = _campaign_rules(command.spec, violations, CAMPAIGN_FIELDS)
        _check_window(new, violations)
        violations.raise_if_any()
        campaign = Campaign.create(self._new_id(), new, self._clock())
        await self._campaigns.add(campaign)
        return campaign

    async def get(self, campaign_id: str, field: str = "id") -> Campaign:
        require_id(campaign_id, field, "campaign id")
        campaign = await self._campaigns.get(campaign_id)
        if campaign is None:
            raise campaign_not_found(campaign_id)
        return campaign

    async def list(self, command: ListCampaigns) -> CampaignPage:
        page = page_request(command.page_size, command.page_token, {})
        campaigns, last = await self._campaigns.list_page(page.after_id, page.size)
        return CampaignPage(campaigns, page.next_token(last) if last else "")

    async def update(self, command: UpdateCampaign) -> Campaign:
        violations = errors.Violations()
        if not command.fields:
            violations.add("update_mask", "must name at least one field")
        for path in sorted(command.fields - CAMPAIGN_FIELDS):
            what = (
                "is output only" if path in CAMPAIGN_OUTPUT_FIELDS else "is not a field of Campaign"
            )
            violations.add("update_mask", f"'{path}' {what}")
        check_id_field(violations, "campaign.id", command.campaign_id, "campaign id")
        given = _campaign_rules(command.spec, violations, command.fields)
        violations.raise_if_any()
        for _ in range(_UPDATE_ATTEMPTS):
            campaign = await self.get(command.campaign_id, "campaign.id")
            new = merged(campaign.rules, given, command.fields)
            _check_window(new, violations)
            violations.raise_if_any()
            expected = campaign.version
            require_unused = campaign.requires_unused(new)
            try:
                changed = campaign.change_rules(new, self._clock())
            except UpdateNotAllowed as exc:
                # ErrorInfo names the refused field: the request is well formed, the state
                # (what is already granted) refuses it, so not INVALID_ARGUMENT.
                metadata = {"campaign_id": campaign.id}
                if exc.field:
                    metadata["field"] = f"campaign.{exc.field}"
                raise errors.FailedPrecondition(str(exc), "UPDATE_NOT_ALLOWED", metadata) from None
            if not changed:
                return campaign
            try:
                await self._campaigns.save(campaign, expected, require_unused)
            except VersionConflict:
                continue  # changed or redeemed meanwhile: check the limits again on fresh state
            return campaign
        raise errors.Aborted(
            "the campaign is being changed concurrently; retry", "CONCURRENT_UPDATE"
        )
