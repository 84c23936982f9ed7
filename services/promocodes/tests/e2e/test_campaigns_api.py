"""Campaigns over gRPC: create, read, list, update; codes made into them; bad input (I5)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from promo.v1 import promo_codes_pb2, promo_codes_pb2_grpc
from promo_libs.grpc.errors import bad_request, error_info

from .conftest import reason
from .test_promo_api import eur, refused

pytestmark = pytest.mark.e2e

pb = promo_codes_pb2
Stub = promo_codes_pb2_grpc.PromoCodeServiceStub


async def test_campaign_round_trip_and_its_codes(promo: Stub) -> None:
    created = await promo.CreateCampaign(
        pb.CreateCampaignRequest(
            campaign=pb.Campaign(
                display_name="Spring",
                max_uses=50,
                max_uses_per_user=1,
                budget=eur(10_000),
                valid_from=Timestamp(seconds=1_900_000_000),
                uses=7,  # output only: ignored
            )
        )
    )
    assert created.id and created.uses == 0 and created.max_uses == 50
    assert created.discount_granted == eur(0)
    assert await promo.GetCampaign(pb.GetCampaignRequest(id=created.id)) == created

    code = await promo.CreatePromoCode(
        pb.CreatePromoCodeRequest(
            promo_code=pb.PromoCode(
                code=f"SPRING-{created.id}",
                percentage=pb.PercentageDiscount(basis_points=1000),
                campaign_id=created.id,
            )
        )
    )
    assert code.campaign_id == created.id
    batch = await promo.GeneratePromoCodes(
        pb.GeneratePromoCodesRequest(
            prefix="SPR-",
            count=3,
            template=pb.PromoCode(
                percentage=pb.PercentageDiscount(basis_points=500), campaign_id=created.id
            ),
        )
    )
    for text in batch.codes:
        looked_up = await promo.LookupPromoCode(pb.LookupPromoCodeRequest(code=text))
        assert looked_up.campaign_id == created.id

    updated = await promo.UpdateCampaign(
        pb.UpdateCampaignRequest(
            campaign=pb.Campaign(id=created.id, display_name="Spring sale", max_uses=40),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "max_uses"]),
        )
    )
    assert (updated.display_name, updated.max_uses, updated.max_uses_per_user) == (
        "Spring sale",
        40,
        1,
    )
    assert updated.update_time.ToDatetime() >= created.update_time.ToDatetime()

    listed: list[str] = []
    token = ""
    while True:
        page = await promo.ListCampaigns(pb.ListCampaignsRequest(page_size=1, page_token=token))
        listed.extend(c.id for c in page.campaigns)
        if not (token := page.next_page_token):
            break
    assert created.id in listed and listed == sorted(listed)


async def test_campaign_bad_input_writes_nothing(promo: Stub, promo_db: Any) -> None:
    before = promo_db.campaigns.count_documents({})
    error = await refused(
        promo.CreateCampaign(
            pb.CreateCampaignRequest(
                campaign=pb.Campaign(
                    display_name="",
                    max_uses=0,
                    budget=eur(0),
                    valid_from=Timestamp(seconds=10),
                    valid_until=Timestamp(seconds=5),
                )
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in bad_request(error).field_violations}
    assert fields == {
        "campaign.display_name",
        "campaign.max_uses",
        "campaign.budget.amount_minor",
        "campaign.valid_until",
    }
    assert promo_db.campaigns.count_documents({}) == before

    missing = await refused(promo.GetCampaign(pb.GetCampaignRequest(id="nosuchcampaign")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert reason(missing) == "CAMPAIGN_NOT_FOUND"

    orphan = await refused(
        promo.CreatePromoCode(
            pb.CreatePromoCodeRequest(
                promo_code=pb.PromoCode(
                    code="ORPHAN-1",
                    percentage=pb.PercentageDiscount(basis_points=100),
                    campaign_id="nosuchcampaign",
                )
            )
        )
    )
    assert orphan.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(orphan) == "CAMPAIGN_NOT_FOUND"
    assert promo_db.promo_codes.count_documents({"code": "ORPHAN-1"}) == 0


async def test_a_campaign_limit_is_not_lowered_below_its_uses(promo: Stub, promo_db: Any) -> None:
    created = await promo.CreateCampaign(
        pb.CreateCampaignRequest(campaign=pb.Campaign(display_name="Capped", max_uses=10))
    )
    # Six uses counted on the campaign, written directly: the refusal must come from the counter.
    promo_db.campaigns.update_one({"_id": created.id}, {"$set": {"uses": 6}})
    error = await refused(
        promo.UpdateCampaign(
            pb.UpdateCampaignRequest(
                campaign=pb.Campaign(id=created.id, max_uses=5),
                update_mask=field_mask_pb2.FieldMask(paths=["max_uses"]),
            )
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(error) == "UPDATE_NOT_ALLOWED"
    info = error_info(error)
    assert info is not None and info.metadata["field"] == "campaign.max_uses"
    stored = await promo.GetCampaign(pb.GetCampaignRequest(id=created.id))
    assert stored.max_uses == 10 and stored.uses == 6
    bad_mask = await refused(
        promo.UpdateCampaign(
            pb.UpdateCampaignRequest(
                campaign=pb.Campaign(id=created.id),
                update_mask=field_mask_pb2.FieldMask(paths=["uses"]),
            )
        )
    )
    assert bad_mask.code() == grpc.StatusCode.INVALID_ARGUMENT
