"""The catalogue use cases: create, read, list, update, deactivate and bulk-generate codes.

GeneratePromoCodes is all or nothing (issue 12): the codes are staged under the request's batch
record (invisible, their events held back), and one write -- the batch becoming LIVE -- makes
them all real. A failure drops the staged codes, which were never announced (no ghost codes in
ClickHouse); a crash leaves them invisible, and a retry with the same request id finds the batch
and completes it (the codes drawn before the crash are kept), so the client gets one batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from promo_libs import errors
from promo_libs.errors import checked
from promo_libs.identifiers import MAX_CODE_LENGTH, check_id, normalize_code
from promo_libs.pagination import page_request
from promocodes_service.domain import rules
from promocodes_service.domain.commands import (
    CreatePromoCode,
    DeletePromoCode,
    GeneratePromoCodes,
    ListPromoCodes,
    UpdatePromoCode,
)
from promocodes_service.domain.model import PromoCode, UpdateNotAllowed, requires_unused
from promocodes_service.domain.ports import (
    LIVE,
    CampaignRepository,
    CodeQuery,
    PromoCodeExists,
    PromoCodeRepository,
    VersionConflict,
)
from promocodes_service.service_layer.validation import (
    IMMUTABLE_FIELDS,
    RULE_FIELDS,
    build_rules,
    check_id_field,
    require_id,
)

_UPDATE_ATTEMPTS = 8
_MAX_DRAW_FACTOR = 20  # give up (CODE_SPACE_EXHAUSTED) after this many draws per wanted code


@dataclass(frozen=True, slots=True)
class CodePage:
    codes: list[PromoCode]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class GeneratedBatch:
    batch_id: str
    codes: list[str]
    collisions_avoided: int


def code_not_found(key: str) -> errors.NotFound:
    return errors.NotFound(
        f"promo code {key} does not exist", "PROMO_CODE_NOT_FOUND", {"promo_code": key}
    )


class Catalogue:
    def __init__(
        self,
        codes: PromoCodeRepository,
        campaigns: CampaignRepository,
        new_id: Callable[[], str],
        clock: Callable[[], datetime],
        draw: Callable[[str, int], str] = rules.random_code,
    ) -> None:
        self._codes = codes
        self._campaigns = campaigns
        self._new_id = new_id
        self._clock = clock
        self._draw = draw

    async def create(self, command: CreatePromoCode) -> PromoCode:
        violations = errors.Violations()
        code = checked(violations, "promo_code.code", normalize_code, command.spec.code)
        rule_set = build_rules(command.spec, "promo_code", violations)
        _check_campaign_id(violations, "promo_code.campaign_id", command.spec.campaign_id)
        violations.raise_if_any()
        assert code is not None and rule_set is not None
        await self._check_campaign(command.spec.campaign_id)
        promo = PromoCode.create(
            self._new_id(), code, rule_set, self._clock(), campaign_id=command.spec.campaign_id
        )
        try:
            await self._codes.add(promo)
        except PromoCodeExists:
            raise errors.AlreadyExists(
                f"promo code {code} already exists", "PROMO_CODE_ALREADY_EXISTS", {"code": code}
            ) from None
        return promo

    async def get(self, code_id: str) -> PromoCode:
        require_id(code_id, "id", "promo code id")
        promo = await self._codes.get(code_id)
        if promo is None:
            raise code_not_found(code_id)
        return promo

    async def lookup(self, code_text: str) -> PromoCode:
        violations = errors.Violations()
        code = checked(violations, "code", normalize_code, code_text)
        violations.raise_if_any()
        assert code is not None
        promo = await self._codes.get_by_code(code)
        if promo is None:
            raise code_not_found(code)
        return promo

    async def list(self, command: ListPromoCodes) -> CodePage:
        violations = errors.Violations()
        prefix = checked(violations, "code_prefix", rules.normalize_prefix, command.code_prefix)
        if command.batch_id:
            checked(violations, "batch_id", lambda v: check_id(v, "batch id"), command.batch_id)
        violations.raise_if_any()
        query = CodeQuery(command.active, command.valid_at, prefix or "", command.batch_id)
        page = page_request(
            command.page_size,
            command.page_token,
            {
                "active": query.active,
                "valid_at": query.valid_at.isoformat() if query.valid_at else None,
                "code_prefix": query.code_prefix,
                "batch_id": query.batch_id,
            },
        )
        codes, last = await self._codes.list_page(query, page.after_id, page.size)
        return CodePage(codes, page.next_token(last) if last else "")

    async def update(self, command: UpdatePromoCode) -> PromoCode:
        violations = errors.Violations()
        if not command.fields:
            violations.add("update_mask", "must name at least one field")
        for path in sorted(command.fields - RULE_FIELDS):
            what = "is immutable" if path in IMMUTABLE_FIELDS else "is not a field of PromoCode"
            violations.add("update_mask", f"'{path}' {what}")
        if {"percentage", "fixed_amount"} <= command.fields:
            violations.add("update_mask", "name one of percentage or fixed_amount, not both")
        checked(
            violations,
            "promo_code.id",
            lambda v: check_id(v, "promo code id"),
            command.code_id,
        )
        violations.raise_if_any()
        fields = tuple(f for f in sorted(RULE_FIELDS) if f in command.fields)
        for _ in range(_UPDATE_ATTEMPTS):
            promo = await self.get(command.code_id)
            new_rules = build_rules(
                command.spec, "promo_code", violations, base=promo.rules, fields=command.fields
            )
            violations.raise_if_any()
            assert new_rules is not None
            old_rules, expected = promo.rules, promo.version
            try:
                changed = promo.change_rules(new_rules, fields, self._clock())
            except UpdateNotAllowed as exc:
                raise errors.FailedPrecondition(
                    str(exc), "UPDATE_NOT_ALLOWED", {"promo_code_id": promo.id}
                ) from None
            if not changed:
                return promo
            try:
                await self._codes.save(promo, expected, requires_unused(old_rules, new_rules))
            except VersionConflict:
                continue  # changed or redeemed meanwhile: check the rules again on fresh state
            return promo
        raise errors.Aborted(
            "the promo code is being changed concurrently; retry", "CONCURRENT_UPDATE"
        )

    async def delete(self, command: DeletePromoCode) -> PromoCode:
        for _ in range(_UPDATE_ATTEMPTS):
            promo = await self.get(command.code_id)
            expected = promo.version
            if not promo.deactivate(self._clock()):
                return promo  # deactivating twice changes nothing
            try:
                await self._codes.save(promo, expected, require_unused=False)
            except VersionConflict:
                continue
            return promo
        raise errors.Aborted(
            "the promo code is being changed concurrently; retry", "CONCURRENT_UPDATE"
        )

    async def generate(self, command: GeneratePromoCodes) -> GeneratedBatch:
        violations = errors.Violations()
        prefix = checked(violations, "prefix", rules.normalize_prefix, command.prefix)
        if not 1 <= command.count <= rules.MAX_GENERATE_COUNT:
            violations.add("count", f"must be 1..{rules.MAX_GENERATE_COUNT}")
        length = command.random_length or rules.DEFAULT_RANDOM_LENGTH
        if not rules.MIN_RANDOM_LENGTH <= length <= rules.MAX_RANDOM_LENGTH:
            violations.add(
                "random_length",
                f"must be {rules.MIN_RANDOM_LENGTH}..{rules.MAX_RANDOM_LENGTH} (0 = default)",
            )
        elif prefix is not None and len(prefix) + length > MAX_CODE_LENGTH:
            violations.add("prefix", f"prefix plus random part exceed {MAX_CODE_LENGTH}")
        _check_generate_keys(violations, command)
        rule_set = build_rules(command.template, "template", violations)
        violations.raise_if_any()
        assert prefix is not None and rule_set is not None
        if rules.code_space(length) < command.count:
            raise _space_exhausted(prefix, length)
        await self._check_campaign(command.template.campaign_id)
        same = repr(dataclasses.replace(command, request_id=""))
        fingerprint = hashlib.sha256(same.encode()).hexdigest()
        batch = await self._codes.begin_batch(
            command.request_id or self._new_id(), self._new_id(), fingerprint, self._clock()
        )
        if batch.fingerprint != fingerprint:
            raise errors.AlreadyExists(
                "the request id was used for a different GeneratePromoCodes request",
                "IDEMPOTENCY_KEY_REUSED",
                {"batch_id": batch.batch_id},
            )
        batch_id = batch.batch_id
        created = await self._codes.batch_codes(batch_id)  # drawn by an attempt that died
        if batch.state == LIVE:
            await self._codes.commit_batch(batch)  # idempotent: finishes what a crash left
            return GeneratedBatch(batch_id, created, 0)
        now = self._clock()
        drawn: set[str] = set(created)
        collisions = 0
        draws_left = command.count * _MAX_DRAW_FACTOR
        try:
            while len(created) < command.count:
                candidates: list[str] = []
                while len(created) + len(candidates) < command.count:
                    if draws_left == 0:
                        raise _space_exhausted(prefix, length)
                    draws_left -= 1
                    candidate = self._draw(prefix, length)
                    if candidate in drawn:
                        collisions += 1
                        continue
                    drawn.add(candidate)
                    candidates.append(candidate)
                promos = [
                    PromoCode.create(
                        self._new_id(), c, rule_set, now, batch_id, command.template.campaign_id
                    )
                    for c in candidates
                ]
                taken = await self._codes.add_batch(promos, len(created))
                collisions += len(taken)
                created.extend(c for c in candidates if c not in taken)
        except Exception:
            await self._codes.drop_batch(batch)  # all or nothing; nothing was announced
            raise
        await self._codes.commit_batch(batch)
        return GeneratedBatch(batch_id, created, collisions)

    async def _check_campaign(self, campaign_id: str) -> None:
        """A code may name only a campaign that exists (campaigns are never deleted, so the
        check cannot go stale between here and the code's write)."""
        if campaign_id and await self._campaigns.get(campaign_id) is None:
            raise errors.FailedPrecondition(
                f"campaign {campaign_id} does not exist",
                "CAMPAIGN_NOT_FOUND",
                {"campaign_id": campaign_id},
            )


def _check_campaign_id(violations: errors.Violations, field: str, campaign_id: str) -> None:
    if campaign_id:
        check_id_field(violations, field, campaign_id, "campaign id")


def _check_generate_keys(violations: errors.Violations, command: GeneratePromoCodes) -> None:
    if command.request_id:
        checked(violations, "request_id", rules.check_redemption_id, command.request_id)
    _check_campaign_id(violations, "template.campaign_id", command.template.campaign_id)


def _space_exhausted(prefix: str, length: int) -> errors.FailedPrecondition:
    return errors.FailedPrecondition(
        f"not enough unused codes for prefix {prefix!r} and random length {length}",
        "CODE_SPACE_EXHAUSTED",
    )
