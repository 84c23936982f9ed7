"""promo.v1.PromoCodeService over gRPC: translate the request, call the use case, translate back.

Errors are not handled here: promo_libs' interceptor maps them to statuses with details.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from promo.v1 import common_pb2, promo_codes_pb2, promo_codes_pb2_grpc
from promo_libs.grpc.carts import line_discounts, line_inputs
from promo_libs.grpc.mapping import money, optional_money, timestamp
from promo_libs.grpc.users import snapshot as user_snapshot
from promocodes_service.domain import cart, rules
from promocodes_service.domain.campaign import Campaign
from promocodes_service.domain.cart import Split
from promocodes_service.domain.commands import (
    CampaignSpec,
    CodeSpec,
    CreateCampaign,
    CreatePromoCode,
    DeletePromoCode,
    GeneratePromoCodes,
    ListCampaigns,
    ListPromoCodes,
    ListPromoCodeUsages,
    RedeemPromoCode,
    ReleasePromoCode,
    TargetingIn,
    UpdateCampaign,
    UpdatePromoCode,
    ValidatePromoCode,
)
from promocodes_service.domain.events import CodeSnapshot
from promocodes_service.domain.model import PromoCode, Usage
from promocodes_service.service_layer.campaigns import Campaigns
from promocodes_service.service_layer.catalogue import Catalogue
from promocodes_service.service_layer.redemption import Redemptions

Context = grpc.aio.ServicerContext[Any, Any]

_STATUS_NAMES = {0: "", 1: "ACTIVE", 2: "RELEASED"}


def _instant(value: Timestamp) -> datetime:
    """A Timestamp as an aware UTC datetime at MongoDB's millisecond precision.

    In range: the interceptor refused every request with one that is not
    (promo_libs.grpc.requests)."""
    moment = value.ToDatetime(tzinfo=UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _money_out(currency: str | None, amount: int | None) -> common_pb2.Money | None:
    """An optional amount of a code (a code without a currency has none)."""
    return None if amount is None else money(currency or "", amount)


def code_spec(message: promo_codes_pb2.PromoCode) -> CodeSpec:
    percentage = message.percentage
    return CodeSpec(
        code=message.code,
        description=message.description,
        discount=message.WhichOneof("discount") or "",
        basis_points=percentage.basis_points,
        max_discount=optional_money(percentage.max_discount, percentage.HasField("max_discount")),
        fixed_amount=optional_money(message.fixed_amount, message.HasField("fixed_amount")),
        valid_from=_instant(message.valid_from) if message.HasField("valid_from") else None,
        valid_until=_instant(message.valid_until) if message.HasField("valid_until") else None,
        min_order_amount=(
            optional_money(message.min_order_amount, message.HasField("min_order_amount"))
        ),
        max_uses=message.max_uses if message.HasField("max_uses") else None,
        max_uses_per_user=(
            message.max_uses_per_user if message.HasField("max_uses_per_user") else None
        ),
        budget=optional_money(message.budget, message.HasField("budget")),
        # At most one more than allowed is converted: that is enough for the use case to refuse
        # the list, and a request of 100,000 ids costs no more than one of 1001.
        eligible_user_ids=tuple(message.eligible_user_ids[: rules.MAX_ELIGIBLE_USERS + 1]),
        active=message.active,
        target=_enum_name(promo_codes_pb2.DiscountTarget, "DISCOUNT_TARGET_", message.target),
        targeting=_targeting_in(message.targeting),
        allocation=_enum_name(promo_codes_pb2.Allocation, "ALLOCATION_", message.allocation),
        max_quantity=message.max_quantity if message.HasField("max_quantity") else None,
        min_item_quantity=(
            message.min_item_quantity if message.HasField("min_item_quantity") else None
        ),
        min_item_amount=(
            optional_money(message.min_item_amount, message.HasField("min_item_amount"))
        ),
        first_order_only=message.first_order_only,
        campaign_id=message.campaign_id,
    )


def campaign_spec(message: promo_codes_pb2.Campaign) -> CampaignSpec:
    return CampaignSpec(
        display_name=message.display_name,
        description=message.description,
        max_uses=message.max_uses if message.HasField("max_uses") else None,
        max_uses_per_user=(
            message.max_uses_per_user if message.HasField("max_uses_per_user") else None
        ),
        budget=optional_money(message.budget, message.HasField("budget")),
        valid_from=_instant(message.valid_from) if message.HasField("valid_from") else None,
        valid_until=_instant(message.valid_until) if message.HasField("valid_until") else None,
    )


def campaign_message(campaign: Campaign) -> promo_codes_pb2.Campaign:
    r = campaign.rules
    return promo_codes_pb2.Campaign(
        id=campaign.id,
        display_name=r.display_name,
        description=r.description,
        max_uses=r.max_uses,
        max_uses_per_user=r.max_uses_per_user,
        budget=_money_out(r.currency, r.budget),
        valid_from=timestamp(r.valid_from),
        valid_until=timestamp(r.valid_until),
        uses=campaign.uses,
        discount_granted=_money_out(r.currency, campaign.discount_granted if r.currency else None),
        create_time=timestamp(campaign.created_at),
        update_time=timestamp(campaign.updated_at),
    )


def _enum_name(kind: Any, prefix: str, value: int) -> str:
    """A proto enum value as its name without prefix; a number the contract lacks as digits."""
    if value not in kind.values():
        return str(value)
    return str(kind.Name(value)).removeprefix(prefix)


def _targeting_in(message: promo_codes_pb2.ItemTargeting) -> TargetingIn:
    # At most one more id than allowed per list: enough for the use case to refuse it.
    cap = cart.MAX_TARGETING_IDS + 1
    return TargetingIn(
        include_product_ids=tuple(message.include_product_ids[:cap]),
        include_category_ids=tuple(message.include_category_ids[:cap]),
        include_skus=tuple(message.include_skus[:cap]),
        exclude_product_ids=tuple(message.exclude_product_ids[:cap]),
        exclude_category_ids=tuple(message.exclude_category_ids[:cap]),
        exclude_skus=tuple(message.exclude_skus[:cap]),
    )


def _offer_out(message: promo_codes_pb2.PromoCode, offer: cart.Offer, currency: str) -> None:
    t = offer.targeting
    message.target = promo_codes_pb2.DiscountTarget.Value(f"DISCOUNT_TARGET_{offer.target.value}")
    message.allocation = promo_codes_pb2.Allocation.Value(f"ALLOCATION_{offer.allocation.value}")
    message.targeting.CopyFrom(
        promo_codes_pb2.ItemTargeting(
            include_product_ids=sorted(t.include_products),
            include_category_ids=sorted(t.include_categories),
            include_skus=sorted(t.include_skus),
            exclude_product_ids=sorted(t.exclude_products),
            exclude_category_ids=sorted(t.exclude_categories),
            exclude_skus=sorted(t.exclude_skus),
        )
    )
    if offer.max_quantity is not None:
        message.max_quantity = offer.max_quantity
    if offer.min_item_quantity is not None:
        message.min_item_quantity = offer.min_item_quantity
    if offer.min_item_amount is not None:
        message.min_item_amount.CopyFrom(money(currency, offer.min_item_amount))
    message.first_order_only = offer.first_order_only


def promo_message(promo: PromoCode) -> promo_codes_pb2.PromoCode:
    """The code as the API shows it: its snapshot's rules, and what only the API shows."""
    r = promo.rules
    message = snapshot_message(promo.snapshot())
    message.description = r.description
    message.eligible_user_ids.extend(r.eligible_user_ids)
    message.uses = promo.uses
    granted = _money_out(r.currency, promo.discount_granted if r.currency else None)
    if granted is not None:
        message.discount_granted.CopyFrom(granted)
    message.update_time.FromDatetime(promo.updated_at)
    _offer_out(message, r.offer, r.currency or "")
    return message


def snapshot_message(code: CodeSnapshot) -> promo_codes_pb2.PromoCode:
    """The code's rules as redeemed (PromoCodeUsage.promo_code): no counters, no targeting."""
    message = promo_codes_pb2.PromoCode(
        id=code.id,
        code=code.code,
        valid_from=timestamp(code.valid_from),
        valid_until=timestamp(code.valid_until),
        min_order_amount=_money_out(code.currency, code.min_order_amount_minor),
        max_uses=code.max_uses,
        max_uses_per_user=code.max_uses_per_user,
        budget=_money_out(code.currency, code.budget_minor),
        active=code.active,
        batch_id=code.batch_id,
        create_time=timestamp(code.created_at),
        campaign_id=code.campaign_id,
    )
    if code.discount_type == "PERCENTAGE":
        message.percentage.CopyFrom(
            promo_codes_pb2.PercentageDiscount(
                basis_points=code.basis_points,
                max_discount=_money_out(code.currency, code.max_discount_minor),
            )
        )
    else:
        message.fixed_amount.CopyFrom(money(code.currency or "", code.fixed_amount_minor))
    return message


def usage_message(usage: Usage) -> promo_codes_pb2.PromoCodeUsage:
    return promo_codes_pb2.PromoCodeUsage(
        id=usage.id,
        promo_code_id=usage.promo_code_id,
        code=usage.code,
        user_id=usage.user_id,
        order_id=usage.id,
        order_amount=money(usage.currency, usage.order_amount),
        discount=money(usage.currency, usage.discount),
        status=promo_codes_pb2.PromoCodeUsageStatus.Value(
            f"PROMO_CODE_USAGE_STATUS_{usage.status}"
        ),
        release_reason=usage.release_reason,
        create_time=timestamp(usage.created_at),
        release_time=timestamp(usage.released_at),
        line_discounts=line_discounts(
            usage.currency, [s.sku for s in usage.lines], [s.discount for s in usage.lines]
        ),
        shipping_discount=money(usage.currency, usage.shipping_discount),
    )


class PromoCodeServicer(promo_codes_pb2_grpc.PromoCodeServiceServicer):
    def __init__(
        self, catalogue: Catalogue, redemptions: Redemptions, campaigns: Campaigns
    ) -> None:
        self._catalogue = catalogue
        self._redemptions = redemptions
        self._campaigns = campaigns

    async def CreatePromoCode(
        self, request: promo_codes_pb2.CreatePromoCodeRequest, context: Context
    ) -> promo_codes_pb2.PromoCode:
        promo = await self._catalogue.create(CreatePromoCode(code_spec(request.promo_code)))
        return promo_message(promo)

    async def GetPromoCode(
        self, request: promo_codes_pb2.GetPromoCodeRequest, context: Context
    ) -> promo_codes_pb2.PromoCode:
        return promo_message(await self._catalogue.get(request.id))

    async def LookupPromoCode(
        self, request: promo_codes_pb2.LookupPromoCodeRequest, context: Context
    ) -> promo_codes_pb2.PromoCode:
        return promo_message(await self._catalogue.lookup(request.code))

    async def ListPromoCodes(
        self, request: promo_codes_pb2.ListPromoCodesRequest, context: Context
    ) -> promo_codes_pb2.ListPromoCodesResponse:
        page = await self._catalogue.list(
            ListPromoCodes(
                page_size=request.page_size,
                page_token=request.page_token,
                active=request.active if request.HasField("active") else None,
                valid_at=_instant(request.valid_at) if request.HasField("valid_at") else None,
                code_prefix=request.code_prefix,
                batch_id=request.batch_id,
            )
        )
        return promo_codes_pb2.ListPromoCodesResponse(
            promo_codes=[promo_message(p) for p in page.codes],
            next_page_token=page.next_page_token,
        )

    async def UpdatePromoCode(
        self, request: promo_codes_pb2.UpdatePromoCodeRequest, context: Context
    ) -> promo_codes_pb2.PromoCode:
        promo = await self._catalogue.update(
            UpdatePromoCode(
                code_id=request.promo_code.id,
                fields=frozenset(request.update_mask.paths),
                spec=code_spec(request.promo_code),
            )
        )
        return promo_message(promo)

    async def DeletePromoCode(
        self, request: promo_codes_pb2.DeletePromoCodeRequest, context: Context
    ) -> promo_codes_pb2.PromoCode:
        return promo_message(await self._catalogue.delete(DeletePromoCode(request.id)))

    async def GeneratePromoCodes(
        self, request: promo_codes_pb2.GeneratePromoCodesRequest, context: Context
    ) -> promo_codes_pb2.GeneratePromoCodesResponse:
        batch = await self._catalogue.generate(
            GeneratePromoCodes(
                prefix=request.prefix,
                count=request.count,
                random_length=request.random_length,
                template=code_spec(request.template),
                request_id=request.request_id,
            )
        )
        return promo_codes_pb2.GeneratePromoCodesResponse(
            batch_id=batch.batch_id, codes=batch.codes, collisions_avoided=batch.collisions_avoided
        )

    async def ValidatePromoCode(
        self, request: promo_codes_pb2.ValidatePromoCodeRequest, context: Context
    ) -> promo_codes_pb2.ValidatePromoCodeResponse:
        amount = optional_money(request.order_amount, request.HasField("order_amount"))
        result = await self._redemptions.validate(
            ValidatePromoCode(
                request.code,
                request.user_id,
                amount,
                lines=line_inputs(request.lines),
                shipping=optional_money(request.shipping, request.HasField("shipping")),
                first_order=request.first_order,
            )
        )
        currency, basket = result.currency, result.basket
        split = result.quote.split or Split.nothing(basket)
        return promo_codes_pb2.ValidatePromoCodeResponse(
            applicable=result.quote.applicable,
            discount=money(currency, result.quote.discount),
            reason=result.quote.reason,
            promo_code=promo_message(result.promo) if result.promo else None,
            line_discounts=line_discounts(
                currency, [line.sku for line in basket.lines], split.lines
            ),
            shipping_discount=money(currency, split.shipping),
            subtotal=money(currency, basket.subtotal),
        )

    async def RedeemPromoCode(
        self, request: promo_codes_pb2.RedeemPromoCodeRequest, context: Context
    ) -> promo_codes_pb2.PromoCodeUsage:
        amount = optional_money(request.order_amount, request.HasField("order_amount"))
        usage = await self._redemptions.redeem(
            RedeemPromoCode(
                request.code,
                request.user_id,
                amount,
                request.redemption_id,
                lines=line_inputs(request.lines),
                shipping=optional_money(request.shipping, request.HasField("shipping")),
                first_order=request.first_order,
                user=user_snapshot(request.user) if request.HasField("user") else None,
            )
        )
        message = usage_message(usage)
        if usage.code_snapshot is not None:
            message.promo_code.CopyFrom(snapshot_message(usage.code_snapshot))
        return message

    async def ReleasePromoCode(
        self, request: promo_codes_pb2.ReleasePromoCodeRequest, context: Context
    ) -> promo_codes_pb2.PromoCodeUsage:
        usage = await self._redemptions.release(
            ReleasePromoCode(request.redemption_id, request.reason)
        )
        return usage_message(usage)

    async def ListPromoCodeUsages(
        self, request: promo_codes_pb2.ListPromoCodeUsagesRequest, context: Context
    ) -> promo_codes_pb2.ListPromoCodeUsagesResponse:
        page = await self._redemptions.list_usages(
            ListPromoCodeUsages(
                page_size=request.page_size,
                page_token=request.page_token,
                promo_code_id=request.promo_code_id,
                user_id=request.user_id,
                status=_STATUS_NAMES.get(request.status, str(request.status)),
            )
        )
        return promo_codes_pb2.ListPromoCodeUsagesResponse(
            promo_code_usages=[usage_message(u) for u in page.usages],
            next_page_token=page.next_page_token,
        )

    async def CreateCampaign(
        self, request: promo_codes_pb2.CreateCampaignRequest, context: Context
    ) -> promo_codes_pb2.Campaign:
        campaign = await self._campaigns.create(CreateCampaign(campaign_spec(request.campaign)))
        return campaign_message(campaign)

    async def GetCampaign(
        self, request: promo_codes_pb2.GetCampaignRequest, context: Context
    ) -> promo_codes_pb2.Campaign:
        return campaign_message(await self._campaigns.get(request.id))

    async def ListCampaigns(
        self, request: promo_codes_pb2.ListCampaignsRequest, context: Context
    ) -> promo_codes_pb2.ListCampaignsResponse:
        page = await self._campaigns.list(ListCampaigns(request.page_size, request.page_token))
        return promo_codes_pb2.ListCampaignsResponse(
            campaigns=[campaign_message(c) for c in page.campaigns],
            next_page_token=page.next_page_token,
        )

    async def UpdateCampaign(
        self, request: promo_codes_pb2.UpdateCampaignRequest, context: Context
    ) -> promo_codes_pb2.Campaign:
        campaign = await self._campaigns.update(
            UpdateCampaign(
                campaign_id=request.campaign.id,
                fields=frozenset(request.update_mask.paths),
                spec=campaign_spec(request.campaign),
            )
        )
        return campaign_message(campaign)
