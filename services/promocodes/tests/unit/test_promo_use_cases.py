"""Catalogue, quotes, redemption, release and the sweep with in-memory fakes."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from datetime import timedelta

import pytest

from promo_libs import deadlines, errors
from promo_libs.carts import MoneyValue
from promocodes_service.domain.campaign import Campaign, CampaignRules
from promocodes_service.domain.commands import (
    CodeSpec,
    CreatePromoCode,
    DeletePromoCode,
    GeneratePromoCodes,
    ListPromoCodes,
    ListPromoCodeUsages,
    RedeemPromoCode,
    ReleasePromoCode,
    UpdatePromoCode,
    ValidatePromoCode,
)
from promocodes_service.domain.model import ABANDONED, REDEEM, PromoCode, Reservation
from promocodes_service.domain.ports import CLAIMED, FENCED
from promocodes_service.service_layer.catalogue import Catalogue
from promocodes_service.service_layer.redemption import Redemptions
from promocodes_testing.memory import InMemoryCampaignRepository

from .conftest import App

pytestmark = pytest.mark.unit

EUR = "EUR"


def eur(amount: int) -> MoneyValue:
    return MoneyValue(EUR, amount)


def pct(code: str, bp: int = 1000, **kw: object) -> CodeSpec:
    return CodeSpec(code=code, discount="percentage", basis_points=bp, **kw)  # type: ignore[arg-type]


def fixed(code: str, amount: int = 500, **kw: object) -> CodeSpec:
    return CodeSpec(code=code, discount="fixed_amount", fixed_amount=eur(amount), **kw)  # type: ignore[arg-type]


async def create(app: App, spec: CodeSpec) -> PromoCode:
    return await app.catalogue.create(CreatePromoCode(spec))


async def redeem(app: App, code: str, user: str, amount: int, rid: str, currency: str = EUR):
    return await app.redemptions.redeem(
        RedeemPromoCode(code, user, MoneyValue(currency, amount), rid)
    )


async def reason_of(awaitable: object) -> str:
    with pytest.raises(errors.DomainError) as caught:
        await awaitable  # type: ignore[misc]
    return caught.value.reason


# --- catalogue ----------------------------------------------------------------------------


async def test_create_normalizes_and_refuses_duplicates_case_insensitively(app: App) -> None:
    promo = await create(app, pct("summer"))
    assert promo.code == "SUMMER" and promo.rules.active and promo.version == 1
    assert [type(e).__name__ for e in app.codes.published] == ["PromoCodeCreated"]
    assert await reason_of(create(app, pct("SuMmEr"))) == "PROMO_CODE_ALREADY_EXISTS"
    assert (await app.catalogue.lookup("sUmMeR")).id == promo.id


async def test_money_fields_must_share_one_currency(app: App) -> None:
    spec = fixed("MIXED", budget=MoneyValue("USD", 10_000))
    with pytest.raises(errors.InvalidArgument) as caught:
        await create(app, spec)
    assert caught.value.reason == "CURRENCY_MISMATCH"
    assert {v.field for v in caught.value.violations} == {
        "promo_code.fixed_amount.currency_code",
        "promo_code.budget.currency_code",
    }
    assert not app.codes.items


async def test_every_bad_field_is_named(app: App) -> None:
    spec = CodeSpec(
        code="x",
        description="d" * 1001,
        discount="percentage",
        basis_points=10001,
        max_discount=MoneyValue("eur", 0),
        min_order_amount=MoneyValue("EUR", -1),
        max_uses=0,
        max_uses_per_user=-3,
        budget=MoneyValue("EUR", 0),
        eligible_user_ids=("ok1", "bad id"),
    )
    with pytest.raises(errors.InvalidArgument) as caught:
        await create(app, spec)
    assert {v.field for v in caught.value.violations} == {
        "promo_code.code",
        "promo_code.description",
        "promo_code.percentage.basis_points",
        "promo_code.percentage.max_discount.currency_code",
        "promo_code.percentage.max_discount.amount_minor",
        "promo_code.min_order_amount.amount_minor",
        "promo_code.max_uses",
        "promo_code.max_uses_per_user",
        "promo_code.budget.amount_minor",
        "promo_code.eligible_user_ids[1]",
    }
    assert not app.codes.items


async def test_window_must_be_ordered_and_discount_given(app: App) -> None:
    now = app.clock.now
    with pytest.raises(errors.InvalidArgument) as caught:
        await create(app, CodeSpec(code="NOPE", valid_from=now, valid_until=now))
    assert {v.field for v in caught.value.violations} == {
        "promo_code.percentage",
        "promo_code.valid_until",
    }


async def test_update_refuses_what_would_break_invariants(app: App) -> None:
    promo = await create(app, fixed("LIMITS", max_uses=5, max_uses_per_user=2, budget=eur(5000)))
    for i in range(2):
        await redeem(app, "LIMITS", "alice", 1000, f"o{i}")

    async def update(fields: set[str], spec: CodeSpec) -> PromoCode:
        return await app.catalogue.update(
            UpdatePromoCode(promo.id, frozenset(fields), dataclasses.replace(spec))
        )

    assert await reason_of(update({"max_uses"}, CodeSpec(max_uses=1))) == "UPDATE_NOT_ALLOWED"
    assert await reason_of(update({"budget"}, CodeSpec(budget=eur(999)))) == "UPDATE_NOT_ALLOWED"
    assert (
        await reason_of(update({"max_uses_per_user"}, CodeSpec(max_uses_per_user=1)))
        == "UPDATE_NOT_ALLOWED"
    )
    moved = CodeSpec(
        discount="fixed_amount", fixed_amount=MoneyValue("USD", 1), budget=MoneyValue("USD", 9999)
    )
    assert await reason_of(update({"fixed_amount", "budget"}, moved)) == "UPDATE_NOT_ALLOWED"
    assert await reason_of(update({"code"}, CodeSpec(code="OTHER"))) == ""  # INVALID_ARGUMENT
    changed = await update({"max_uses", "max_uses_per_user", "description"}, CodeSpec(
        max_uses=2, max_uses_per_user=3, description="raised"
    ))  # fmt: skip
    assert (changed.rules.max_uses, changed.rules.max_uses_per_user, changed.version) == (2, 3, 2)
    assert type(app.codes.published[-1]).__name__ == "PromoCodeUpdated"
    cleared = await update({"max_uses"}, CodeSpec())
    assert cleared.rules.max_uses is None  # listed but unset = cleared


async def test_delete_deactivates_once(app: App) -> None:
    promo = await create(app, pct("BYE"))
    first = await app.catalogue.delete(DeletePromoCode(promo.id))
    second = await app.catalogue.delete(DeletePromoCode(promo.id))
    assert not first.rules.active and second.version == first.version == 2
    assert [type(e).__name__ for e in app.codes.published][-1] == "PromoCodeDeactivated"
    assert await reason_of(redeem(app, "BYE", "alice", 100, "r1")) == "PROMO_CODE_INACTIVE"


async def test_list_filters_and_pages_in_code_order(app: App) -> None:
    for code in ("B-2", "A-1", "B-1", "C-1", "B-3"):
        await create(app, pct(code))
    first = await app.catalogue.list(ListPromoCodes(2, "", code_prefix="b"))
    assert [p.code for p in first.codes] == ["B-1", "B-2"] and first.next_page_token
    second = await app.catalogue.list(ListPromoCodes(2, first.next_page_token, code_prefix="b"))
    assert [p.code for p in second.codes] == ["B-3"] and not second.next_page_token
    with pytest.raises(errors.InvalidArgument) as caught:
        await app.catalogue.list(ListPromoCodes(2, first.next_page_token, code_prefix="a"))
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


async def test_generate_avoids_collisions_and_reports_them(app: App) -> None:
    await create(app, pct("G-AAAA"))
    draws = iter(["G-AAAA", "G-BBBB", "G-BBBB", "G-CCCC", "G-DDDD"])
    ids = itertools.count()
    catalogue = Catalogue(app.codes, InMemoryCampaignRepository(), lambda: f"g{next(ids)}",
                          app.clock, lambda prefix, length: next(draws))  # fmt: skip
    batch = await catalogue.generate(GeneratePromoCodes("g-", 3, 4, pct("")))
    assert batch.codes == ["G-BBBB", "G-CCCC", "G-DDDD"]
    assert batch.collisions_avoided == 2  # one existed, one was drawn twice
    assert len({p.code for p in app.codes.items.values()}) == len(app.codes.items) == 4


async def test_generate_refuses_an_exhausted_space_and_writes_nothing(app: App) -> None:
    catalogue = Catalogue(app.codes, InMemoryCampaignRepository(),
                          lambda: f"i{len(app.codes.items)}", app.clock,
                          lambda prefix, length: "X-AAAA")  # fmt: skip
    assert (
        await reason_of(catalogue.generate(GeneratePromoCodes("x-", 2, 4, pct(""))))
        == "CODE_SPACE_EXHAUSTED"
    )
    assert not app.codes.items
    assert app.codes.published == []  # nothing announced: no ghost codes downstream


def _drawing(app: App, texts: list[str]) -> Catalogue:
    draws, ids = iter(texts), itertools.count()
    return Catalogue(app.codes, InMemoryCampaignRepository(), lambda: f"b{next(ids)}", app.clock,
                     lambda prefix, length: next(draws))  # fmt: skip


async def test_generate_with_a_request_id_is_idempotent(app: App) -> None:
    catalogue = _drawing(app, ["R-AAAA", "R-BBBB", "R-CCCC", "R-DDDD"])
    command = GeneratePromoCodes("r-", 2, 4, pct(""), request_id="gen-1")
    first = await catalogue.generate(command)
    again = await catalogue.generate(command)
    assert (
        (again.batch_id, again.codes)
        == (first.batch_id, first.codes)
        == (
            first.batch_id,
            ["R-AAAA", "R-BBBB"],
        )
    )
    assert len(app.codes.items) == 2 and len(app.codes.published) == 2
    other = dataclasses.replace(command, count=3)
    assert await reason_of(catalogue.generate(other)) == "IDEMPOTENCY_KEY_REUSED"


async def test_a_batch_is_invisible_until_complete_and_a_retry_completes_it(app: App) -> None:
    """An attempt that died after staging some codes: none is visible or announced; the retry
    with the same request id keeps them, draws the rest and commits the whole batch."""
    catalogue = _drawing(app, ["K-CCCC", "K-DDDD"])
    command = GeneratePromoCodes("k-", 3, 4, pct(""), request_id="gen-2")
    import hashlib

    fingerprint = hashlib.sha256(
        repr(dataclasses.replace(command, request_id="")).encode()
    ).hexdigest()
    batch = await app.codes.begin_batch("gen-2", "dead-batch", fingerprint, app.clock.now)
    spec = await create(app, pct("K-SEED"))
    staged = [PromoCode.create(f"s{n}", f"K-{c}", spec.rules, app.clock.now, batch.batch_id)
              for n, c in enumerate(["AAAA", "BBBB"])]  # fmt: skip
    assert await app.codes.add_batch(staged, 0) == set()
    assert await app.codes.get_by_code("K-AAAA") is None
    assert await reason_of(redeem(app, "K-AAAA", "alice", 1000, "early")) == (
        "PROMO_CODE_NOT_FOUND"
    )
    assert [type(e).__name__ for e in app.codes.published] == ["PromoCodeCreated"]  # K-SEED
    done = await catalogue.generate(command)
    assert done.batch_id == "dead-batch"
    assert done.codes == ["K-AAAA", "K-BBBB", "K-CCCC"]
    assert (await app.codes.get_by_code("K-AAAA")) is not None
    assert len(app.codes.published) == 4
    assert (await redeem(app, "K-BBBB", "alice", 1000, "later")).status == "ACTIVE"


# --- rules and reasons --------------------------------------------------------------------


async def quote(app: App, code: str, user: str, amount: int, currency: str = EUR):
    return (
        await app.redemptions.validate(ValidatePromoCode(code, user, MoneyValue(currency, amount)))
    ).quote


async def test_every_rule_in_order(app: App) -> None:
    now = app.clock.now
    await create(app, pct("LATER", valid_from=now + timedelta(seconds=1)))
    await create(app, pct("OVER", valid_until=now))
    await create(app, pct("FEW", eligible_user_ids=("bob",)))
    await create(app, fixed("EURO", 100, min_order_amount=eur(1000)))
    await create(app, fixed("ONCE", 100, max_uses=1))
    await create(app, fixed("MINE", 100, max_uses_per_user=1))
    await create(app, fixed("SMALL", 300, budget=eur(500)))
    off = await create(app, pct("OFF"))
    await app.catalogue.delete(DeletePromoCode(off.id))
    assert (await quote(app, "NOPE", "alice", 1)).reason == "PROMO_CODE_NOT_FOUND"
    assert (await quote(app, "OFF", "alice", 1)).reason == "PROMO_CODE_INACTIVE"
    assert (await quote(app, "LATER", "alice", 1)).reason == "PROMO_CODE_NOT_STARTED"
    assert (await quote(app, "OVER", "alice", 1)).reason == "PROMO_CODE_EXPIRED"
    assert (await quote(app, "FEW", "alice", 1)).reason == "USER_NOT_ELIGIBLE"
    assert (await quote(app, "FEW", "bob", 1000)).discount == 100
    assert (await quote(app, "EURO", "alice", 5000, "USD")).reason == "CURRENCY_MISMATCH"
    assert (await quote(app, "EURO", "alice", 999)).reason == "ORDER_BELOW_MINIMUM"
    assert (await quote(app, "EURO", "alice", 1000)).discount == 100
    await redeem(app, "ONCE", "alice", 1000, "o1")
    assert (await quote(app, "ONCE", "bob", 1000)).reason == "PROMO_CODE_EXHAUSTED"
    await redeem(app, "MINE", "alice", 1000, "o2")
    assert (await quote(app, "MINE", "alice", 1000)).reason == "PER_USER_LIMIT_REACHED"
    assert (await quote(app, "MINE", "bob", 1000)).applicable
    await redeem(app, "SMALL", "alice", 1000, "o3")
    assert (await quote(app, "SMALL", "bob", 1000)).reason == "BUDGET_EXHAUSTED"
    assert (await quote(app, "SMALL", "bob", 200)).discount == 200  # 200 more fits exactly
    app.clock.advance(1)
    assert (await quote(app, "LATER", "alice", 1)).applicable  # valid_from is inclusive
    for code, reason in [("ONCE", "PROMO_CODE_EXHAUSTED"), ("EURO", "CURRENCY_MISMATCH")]:
        currency = "USD" if code == "EURO" else EUR
        assert await reason_of(redeem(app, code, "bob", 1000, f"x-{code}", currency)) == reason
    assert await reason_of(redeem(app, "SMALL", "bob", 1000, "x3")) == "BUDGET_EXHAUSTED"


async def test_percentage_without_money_applies_in_any_currency(app: App) -> None:
    await create(app, pct("ANY", 1550))
    usage = await redeem(app, "ANY", "alice", 999, "jpy-1", "JPY")
    assert (usage.discount, usage.currency) == (154, "JPY")  # floor(154.845)
    promo = await app.catalogue.lookup("ANY")
    assert promo.rules.currency is None and promo.uses == 1


async def test_user_must_exist_and_be_active_and_reachable(app: App) -> None:
    await create(app, pct("USERS"))
    assert await reason_of(redeem(app, "USERS", "ghost", 100, "u1")) == "USER_NOT_FOUND"
    assert await reason_of(redeem(app, "USERS", "dormant", 100, "u2")) == "USER_INACTIVE"
    app.users.down = True
    with pytest.raises(errors.Unavailable):
        await redeem(app, "USERS", "alice", 100, "u3")
    promo = await app.catalogue.lookup("USERS")
    assert (promo.uses, promo.pending, app.usages.stored) == (0, {}, {})


async def test_a_user_passed_by_the_caller_is_not_read_again(app: App) -> None:
    """Orders passes the user its CreateOrder just read (RedeemPromoCodeRequest.user): no
    GetUser then; a user for another id is refused; without one, the user is read."""
    await create(app, pct("GIVEN", max_uses_per_user=1))
    alice = app.users.users["alice"]
    given = RedeemPromoCode("GIVEN", "alice", eur(1000), "g1", user=alice)
    usage = await app.redemptions.redeem(given)
    assert (usage.user, app.users.calls) == (alice, 0)
    assert await app.redemptions.redeem(given) == usage and app.users.calls == 0  # a replay
    dormant = app.users.users["dormant"]
    inactive = RedeemPromoCode("GIVEN", "dormant", eur(1000), "g2", user=dormant)
    assert await reason_of(app.redemptions.redeem(inactive)) == "USER_INACTIVE"
    assert app.users.calls == 0
    with pytest.raises(errors.InvalidArgument) as caught:
        await app.redemptions.redeem(RedeemPromoCode("GIVEN", "bob", eur(1000), "g3", user=alice))
    assert [v.field for v in caught.value.violations] == ["user.id"]
    assert app.users.calls == 0
    await redeem(app, "GIVEN", "bob", 1000, "g4")
    assert app.users.calls == 1
    promo = await app.catalogue.lookup("GIVEN")
    assert (promo.uses, promo.pending) == (2, {})


# --- redemption ---------------------------------------------------------------------------


async def test_redeem_is_idempotent_and_detects_conflicts(app: App) -> None:
    await create(app, fixed("ONE", 250, max_uses=10))
    first = await redeem(app, "one", "alice", 1000, "order-1")
    again = await redeem(app, "ONE", "alice", 1000, "order-1")
    assert again == first and first.discount == 250
    assert await reason_of(redeem(app, "ONE", "alice", 999, "order-1")) == "REDEMPTION_CONFLICT"
    assert await reason_of(redeem(app, "ONE", "bob", 1000, "order-1")) == "REDEMPTION_CONFLICT"
    promo = await app.catalogue.lookup("ONE")
    assert (promo.uses, promo.discount_granted, promo.pending) == (1, 250, {})
    assert [type(e).__name__ for e in app.usages.published] == ["PromoCodeRedeemed"]


async def test_a_replay_answers_the_stored_usage_whatever_changed_since(app: App) -> None:
    """The success path no longer reads the usage first: every refusal looks for it instead."""
    promo = await create(app, fixed("ONCE", 250, max_uses=1, max_uses_per_user=1))
    first = await redeem(app, "ONCE", "alice", 1000, "order-1")
    assert first.code_snapshot == promo.snapshot()
    assert await redeem(app, "ONCE", "alice", 1000, "order-1") == first  # exhausted, per user
    app.users.add("alice", active=False)
    assert await redeem(app, "ONCE", "alice", 1000, "order-1") == first  # user inactive
    app.users.down = True
    assert await redeem(app, "ONCE", "alice", 1000, "order-1") == first  # users unreachable
    app.users.down = False
    await app.catalogue.delete(DeletePromoCode(promo.id))
    again = await redeem(app, "ONCE", "alice", 1000, "order-1")  # code deactivated
    assert again == first and again.code_snapshot is not None and again.code_snapshot.active
    after = await app.catalogue.lookup("ONCE")
    assert (after.uses, after.discount_granted, after.pending) == (1, 250, {})


async def test_a_voided_id_is_refused_as_voided_whatever_else_would_refuse_it(app: App) -> None:
    await create(app, fixed("GONE", 100, max_uses=5))
    release = ReleasePromoCode("gone-order", "order rejected")
    assert await reason_of(app.redemptions.release(release)) == "REDEMPTION_NOT_FOUND"
    app.users.add("alice", active=False)
    assert await reason_of(redeem(app, "GONE", "alice", 1000, "gone-order")) == "REDEMPTION_VOIDED"


async def test_concurrent_same_id_gives_one_usage(app: App) -> None:
    await create(app, fixed("SAME", 100))
    results = await asyncio.gather(*(redeem(app, "SAME", "bob", 500, "dup") for _ in range(20)))
    assert all(r == results[0] for r in results)
    assert len(app.usages.stored) == 1 and (await app.catalogue.lookup("SAME")).uses == 1


async def test_limits_hold_under_concurrency(app: App) -> None:
    users = [f"u{i}" for i in range(20)]
    for user in users:
        app.users.add(user)
    await create(app, fixed("HOT", 100, max_uses=15, max_uses_per_user=2))
    calls = [redeem(app, "HOT", users[i % 20], 1000, f"r{i}") for i in range(100)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    granted = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(granted) == 15
    per_user: dict[str, int] = {}
    for usage in granted:
        per_user[usage.user_id] = per_user.get(usage.user_id, 0) + 1
    assert max(per_user.values()) <= 2
    reasons = {o.reason for o in outcomes if isinstance(o, errors.DomainError)}
    assert reasons <= {"PROMO_CODE_EXHAUSTED", "PER_USER_LIMIT_REACHED"}


async def test_release_gives_everything_back_once(app: App) -> None:
    await create(app, fixed("BACK", 300, max_uses=1, max_uses_per_user=1, budget=eur(300)))
    await redeem(app, "BACK", "alice", 1000, "o1")
    assert await reason_of(redeem(app, "BACK", "alice", 1000, "o2")) == "PROMO_CODE_EXHAUSTED"
    released = await app.redemptions.release(ReleasePromoCode("o1", "order cancelled"))
    again = await app.redemptions.release(ReleasePromoCode("o1", "another reason"))
    assert released.status == again.status == "RELEASED"
    assert again.release_reason == "order cancelled"
    promo = await app.catalogue.lookup("BACK")
    assert (promo.uses, promo.discount_granted, promo.pending) == (0, 0, {})
    redone = await redeem(app, "BACK", "alice", 1000, "o2")  # per-user slot is free again
    assert redone.status == "ACTIVE"
    assert (await redeem(app, "BACK", "alice", 1000, "o1")).status == "RELEASED"  # stored outcome
    assert await reason_of(app.redemptions.release(ReleasePromoCode("nope"))) == (
        "REDEMPTION_NOT_FOUND"
    )
    page = await app.redemptions.list_usages(ListPromoCodeUsages(0, "", user_id="alice"))
    assert [(u.id, u.status) for u in page.usages] == [("o1", "RELEASED"), ("o2", "ACTIVE")]


# --- sweep --------------------------------------------------------------------------------


async def _reserve(app: App, code: str, rid: str, attempt: str, discount: int = 100) -> PromoCode:
    promo = await app.catalogue.lookup(code)
    reservation = Reservation(attempt, REDEEM, "alice", discount, app.clock.now)
    assert await app.codes.reserve(promo, rid, reservation)
    return promo


async def test_recovery_rolls_back_a_reservation_without_usage_and_fences_it(app: App) -> None:
    await create(app, fixed("CRASH", 100, max_uses=1))
    promo = await _reserve(app, "CRASH", "lost", "att1")
    assert (await app.sweeper.sweep()).still_fresh == 1  # not stale yet
    app.clock.advance(31)
    report = await app.sweeper.sweep()
    assert report.rolled_back == 1
    after = await app.catalogue.lookup("CRASH")
    assert (after.uses, after.discount_granted, after.pending) == (0, 0, {})
    # The dead request cannot come back and write its usage now.
    from promocodes_service.domain.model import Usage

    late = Usage.redeem(
        "lost", promo, app.users.users["alice"], 1000, EUR, 100, "att1", app.clock.now
    )
    assert (await app.usages.claim(late, None)).outcome == FENCED
    assert app.usages.stored["lost"].usage.status == ABANDONED
    # A retry of the same redemption id works and sees the id as free.
    usage = await redeem(app, "CRASH", "alice", 1000, "lost")
    assert usage.status == "ACTIVE" and (await app.catalogue.lookup("CRASH")).uses == 1


async def test_recovery_finalizes_a_reservation_whose_usage_exists(app: App) -> None:
    await create(app, fixed("HALF", 100))
    promo = await _reserve(app, "HALF", "half", "att2")
    from promocodes_service.domain.model import Usage

    usage = Usage.redeem(
        "half", promo, app.users.users["alice"], 1000, EUR, 100, "att2", app.clock.now
    )
    assert (await app.usages.claim(usage, None)).outcome == CLAIMED
    app.clock.advance(31)
    assert (await app.sweeper.sweep()).finalized == 1
    after = await app.catalogue.lookup("HALF")
    assert (after.uses, after.discount_granted, after.pending) == (1, 100, {})


async def test_a_retry_settles_a_stale_reservation_of_its_own_id(app: App) -> None:
    await create(app, fixed("RETRY", 100, max_uses=1))
    await _reserve(app, "RETRY", "again", "att3")
    app.clock.advance(31)
    usage = await redeem(app, "RETRY", "alice", 1000, "again")
    after = await app.catalogue.lookup("RETRY")
    assert usage.status == "ACTIVE" and (after.uses, after.pending) == (1, {})


async def test_bad_values_in_redemption_requests(app: App) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        await app.redemptions.redeem(RedeemPromoCode("", "bad id", MoneyValue("eu", 0), "a.b"))
    assert {v.field for v in caught.value.violations} == {
        "code",
        "user_id",
        "order_amount.currency_code",
        "order_amount.amount_minor",
        "redemption_id",
    }
    with pytest.raises(errors.InvalidArgument) as caught:
        await app.redemptions.validate(ValidatePromoCode("OK1", "alice", None))
    assert [v.field for v in caught.value.violations] == ["order_amount"]
    with pytest.raises(errors.InvalidArgument) as caught:
        await app.redemptions.release(ReleasePromoCode("", "r" * 501))
    assert {v.field for v in caught.value.violations} == {"redemption_id", "reason"}
    with pytest.raises(errors.InvalidArgument) as caught:
        await app.redemptions.list_usages(ListPromoCodeUsages(-1, "", status="7"))
    assert {v.field for v in caught.value.violations} == {"status"}
    assert app.users.calls == 0


# --- a Release before the Redeem voids the id ---------------------------------------------


async def test_a_release_of_an_unknown_id_voids_it_for_every_later_redeem(app: App) -> None:
    await create(app, fixed("VOID", 100, max_uses=5))
    release = ReleasePromoCode("late-order", "order rejected")
    assert await reason_of(app.redemptions.release(release)) == "REDEMPTION_NOT_FOUND"
    assert await reason_of(app.redemptions.release(release)) == "REDEMPTION_NOT_FOUND"
    for _ in range(2):  # refused, and refused again: the same answer every time
        assert await reason_of(redeem(app, "VOID", "alice", 1000, "late-order")) == (
            "REDEMPTION_VOIDED"
        )
    after = await app.catalogue.lookup("VOID")
    assert (after.uses, after.discount_granted, after.pending) == (0, 0, {})
    listed = await app.redemptions.list_usages(ListPromoCodeUsages(10, ""))
    assert listed.usages == []


async def test_a_redeem_in_flight_when_the_id_is_voided_gives_its_reservation_back(
    app: App,
) -> None:
    """The Release lands between the Redeem's reservation and its usage write: the usage write
    collides with the tombstone, the reservation is compensated, the Redeem is refused."""
    await create(app, fixed("RACE", 100, max_uses=1))
    real_claim = app.usages.claim

    async def claim_after_release(usage, slot, campaign_slot=None):  # type: ignore[no-untyped-def]
        assert await app.usages.void(usage.id) is None  # what a Release finds: no usage yet
        return await real_claim(usage, slot, campaign_slot)

    app.usages.claim = claim_after_release  # type: ignore[method-assign]
    assert await reason_of(redeem(app, "RACE", "alice", 1000, "raced")) == "REDEMPTION_VOIDED"
    app.usages.claim = real_claim  # type: ignore[method-assign]
    after = await app.catalogue.lookup("RACE")
    assert (after.uses, after.discount_granted, after.pending) == (0, 0, {})
    assert (await redeem(app, "RACE", "alice", 1000, "other")).status == "ACTIVE"


async def test_recovery_rolls_back_a_stale_reservation_of_a_voided_id(app: App) -> None:
    await create(app, fixed("STALE", 100, max_uses=1))
    await _reserve(app, "STALE", "gone", "att9")
    assert await app.usages.void("gone") is None
    app.clock.advance(31)
    assert (await app.sweeper.sweep()).rolled_back == 1
    after = await app.catalogue.lookup("STALE")
    assert (after.uses, after.pending) == (0, {})
    assert app.usages.stored["gone"].usage.status == "VOIDED"


# --- how long a Redeem waits for other requests' reservations -----------------------------


def _patient(app: App) -> None:
    """Redemptions that would wait up to 30 s for in-flight reservations (the caller's deadline
    must be what stops them)."""
    ids = itertools.count(1)
    app.redemptions = Redemptions(
        app.codes,
        app.usages,
        app.users,
        app.sweeper,
        lambda: f"p{next(ids):06d}",
        app.clock,
        campaigns=app.campaigns,
        wait_limit=30.0,
    )


async def test_a_fresh_reservation_is_waited_for_only_until_the_callers_deadline(
    app: App,
) -> None:
    _patient(app)
    await create(app, fixed("FULL", 100, max_uses=1))
    await _reserve(app, "FULL", "alive", "att-a")  # fresh: not fenced, may still roll back
    loop = asyncio.get_running_loop()
    started = loop.time()
    with deadlines.bound(0.6):
        reason = await reason_of(redeem(app, "FULL", "bob", 1000, "waiter"))
    waited = loop.time() - started
    assert reason == "PROMO_CODE_EXHAUSTED"
    assert waited < 0.6, f"answered after the caller's deadline ({waited:.2f}s)"


async def test_a_reservation_whose_usage_is_written_is_not_waited_for(app: App) -> None:
    _patient(app)
    await create(app, fixed("DONE", 100, max_uses=1))
    promo = await _reserve(app, "DONE", "written", "att-w")
    from promocodes_service.domain.model import Usage

    usage = Usage.redeem(
        "written", promo, app.users.users["alice"], 1000, EUR, 100, "att-w", app.clock.now
    )
    assert (await app.usages.claim(usage, None)).outcome == CLAIMED  # settle step not done yet
    loop = asyncio.get_running_loop()
    started = loop.time()
    with deadlines.bound(20):
        reason = await reason_of(redeem(app, "DONE", "bob", 1000, "next"))
    assert reason == "PROMO_CODE_EXHAUSTED"
    assert loop.time() - started < 0.5  # no wait: that reservation can only be finalized


async def test_an_overdue_reservation_of_a_dead_request_is_settled_by_the_next_redeem(
    app: App,
) -> None:
    _patient(app)
    await create(app, fixed("DEAD", 100, max_uses=1))
    promo = await app.catalogue.lookup("DEAD")
    until = app.clock.now + timedelta(seconds=1)  # its caller's deadline
    reservation = Reservation("att-k", REDEEM, "alice", 100, app.clock.now, until)
    assert await app.codes.reserve(promo, "killed", reservation)  # killed before step 2
    app.clock.advance(2)  # past its deadline, far younger than the sweep's 30 s
    with deadlines.bound(5):
        usage = await redeem(app, "DEAD", "bob", 1000, "after")
    after = await app.catalogue.lookup("DEAD")
    assert usage.status == "ACTIVE" and (after.uses, after.pending.keys()) == (1, set())
    assert app.usages.stored["killed"].usage.status == ABANDONED  # the dead attempt is fenced


async def test_a_batch_nobody_retries_is_dropped_by_recovery_after_an_hour(app: App) -> None:
    seed = await create(app, pct("Z-SEED"))
    batch = await app.codes.begin_batch("gen-3", "lost-batch", "f", app.clock.now)
    staged = [PromoCode.create("z1", "Z-AAAA", seed.rules, app.clock.now, batch.batch_id)]
    assert await app.codes.add_batch(staged, 0) == set()
    app.clock.advance(1800)
    await app.sweeper.sweep()
    assert "z1" in app.codes.items  # half an hour: a retry may still come
    app.clock.advance(1801)
    await app.sweeper.sweep()
    assert "z1" not in app.codes.items and "gen-3" not in app.codes.batches
    assert [type(e).__name__ for e in app.codes.published] == ["PromoCodeCreated"]  # Z-SEED


# --- campaigns ------------------------------------------------------------------------------


async def test_a_campaign_limits_its_codes_together_and_release_gives_back(app: App) -> None:
    campaign = Campaign.create(
        "camp1", CampaignRules("C", max_uses=2, max_uses_per_user=1), app.clock()
    )
    await app.campaigns.add(campaign)
    for text in ("CAMP-A", "CAMP-B"):
        await app.catalogue.create(
            CreatePromoCode(
                CodeSpec(
                    code=text,
                    discount="fixed_amount",
                    fixed_amount=MoneyValue(EUR, 100),
                    campaign_id="camp1",
                )
            )
        )
    await redeem(app, "CAMP-A", "alice", 1000, "c1")
    assert await reason_of(redeem(app, "CAMP-B", "alice", 1000, "c2")) == (
        "CAMPAIGN_PER_USER_LIMIT_REACHED"
    )
    await redeem(app, "CAMP-B", "bob", 1000, "c3")
    assert await reason_of(redeem(app, "CAMP-B", "carol", 1000, "c4")) == "CAMPAIGN_EXHAUSTED"
    stored = await app.campaigns.get("camp1")
    assert stored is not None and (stored.uses, stored.discount_granted, stored.pending) == (
        2,
        200,
        {},
    )
    await app.redemptions.release(ReleasePromoCode("c1", "cancelled"))
    stored = await app.campaigns.get("camp1")
    assert stored is not None and (stored.uses, stored.discount_granted) == (1, 100)
    await redeem(app, "CAMP-B", "alice", 1000, "c5")  # her campaign slot is free again
    # Every usage event names the campaign; counting redemptions on it recorded no campaign
    # event (only its creation, which `add` published).
    usage_events = [e for e in app.usages.published if e.usage.id in {"c1", "c3", "c5"}]
    assert len(usage_events) == 4  # three redemptions and one release
    assert {e.usage.campaign_id for e in usage_events} == {"camp1"}
    assert [v for _, v in app.campaigns.published] == [1]


async def test_a_usage_the_campaign_never_counted_gives_it_nothing_back(app: App) -> None:
    """A usage of a campaign's code redeemed before campaigns were enforced (no campaign_id on
    it) was never counted on the campaign: releasing it must not lower the campaign's counters."""
    await app.campaigns.add(Campaign.create("camp2", CampaignRules("C", max_uses=5), app.clock()))
    spec = CodeSpec(code="OLD-CAMP", discount="fixed_amount", fixed_amount=MoneyValue(EUR, 100))
    await app.catalogue.create(CreatePromoCode(dataclasses.replace(spec, campaign_id="camp2")))
    await redeem(app, "OLD-CAMP", "alice", 1000, "old-1")
    await redeem(app, "OLD-CAMP", "bob", 1000, "legacy")
    app.usages.stored["legacy"].usage.campaign_id = ""  # as stored before enforcement
    campaign = await app.campaigns.get("camp2")
    assert campaign is not None
    campaign.uses, campaign.discount_granted = 1, 100  # only old-1 was counted there
    app.campaigns.items["camp2"] = campaign
    await app.redemptions.release(ReleasePromoCode("legacy", "cancelled"))
    after = await app.campaigns.get("camp2")
    assert after is not None and (after.uses, after.discount_granted, after.pending) == (1, 100, {})


async def test_an_overdue_campaign_reservation_of_a_dead_request_is_settled_by_the_next_redeem(
    app: App,
) -> None:
    """A request killed after "reserve campaign" holds the campaign's last use: the next
    redemption does not answer CAMPAIGN_EXHAUSTED (the use may come back), and once that
    request's deadline has passed it settles the reservation itself (fenced) and is granted."""
    _patient(app)
    await app.campaigns.add(Campaign.create("camp3", CampaignRules("C", max_uses=1), app.clock()))
    spec = CodeSpec(code="DEAD-CAMP", discount="fixed_amount", fixed_amount=MoneyValue(EUR, 100))
    await app.catalogue.create(CreatePromoCode(dataclasses.replace(spec, campaign_id="camp3")))
    promo = await app.catalogue.lookup("DEAD-CAMP")
    campaign = await app.campaigns.get("camp3")
    assert campaign is not None
    until = app.clock.now + timedelta(seconds=1)
    on_campaign = Reservation(
        "att-c", REDEEM, "alice", 100, app.clock.now, until, promo_code_id=promo.id
    )
    assert await app.campaigns.reserve(campaign, "killed-c", on_campaign)  # then killed
    app.clock.advance(2)
    with deadlines.bound(5):
        usage = await redeem(app, "DEAD-CAMP", "bob", 1000, "after-c")
    after = await app.campaigns.get("camp3")
    assert usage.status == "ACTIVE" and after is not None
    assert (after.uses, after.pending.keys()) == (1, set())
    assert app.usages.stored["killed-c"].usage.status == ABANDONED


async def test_a_usage_of_a_code_outside_campaigns_names_no_campaign(app: App) -> None:
    await app.catalogue.create(
        CreatePromoCode(
            CodeSpec(code="SOLO", discount="fixed_amount", fixed_amount=MoneyValue(EUR, 100))
        )
    )
    await redeem(app, "SOLO", "alice", 1000, "s1")
    await app.redemptions.release(ReleasePromoCode("s1", "cancelled"))
    mine = [e for e in app.usages.published if e.usage.id == "s1"]
    assert len(mine) == 2 and {e.usage.campaign_id for e in mine} == {""}
    assert app.campaigns.published == []
