"""promo.v1.OrderService over gRPC: translate the request, call the use case, translate back.

Errors are not handled here: promo_libs' interceptor maps them to statuses with details.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import grpc

from orders_service.adapters.event_codec import order_fields
from orders_service.domain.commands import CancelOrder, CreateOrder, ListOrders
from orders_service.domain.model import Order
from orders_service.service_layer.orders import Orders
from promo.v1 import common_pb2, orders_pb2, orders_pb2_grpc
from promo_libs.grpc.carts import line_inputs
from promo_libs.grpc.mapping import money, optional_money

Context = grpc.aio.ServicerContext[Any, Any]


def order_message(order: Order) -> orders_pb2.Order:
    return orders_pb2.Order(
        **order_fields(order),
        subtotal=money(order.subtotal.currency, order.subtotal.amount_minor),
        discount=money(order.discount.currency, order.discount.amount_minor),
        total=money(order.total.currency, order.total.amount_minor),
        lines=[
            orders_pb2.OrderLine(
                item=common_pb2.LineItem(
                    sku=line.sku,
                    product_id=line.product_id,
                    category_ids=list(line.category_ids),
                    quantity=line.quantity,
                    unit_price=money(order.subtotal.currency, line.unit_price),
                ),
                discount=money(order.subtotal.currency, line.discount),
            )
            for line in order.lines
        ],
        shipping=money(order.subtotal.currency, order.shipping_minor),
        shipping_discount=money(order.subtotal.currency, order.shipping_discount_minor),
    )


def _status_filter(value: int) -> str:
    if value == orders_pb2.ORDER_STATUS_UNSPECIFIED:
        return ""
    try:
        return orders_pb2.OrderStatus.Name(value).removeprefix("ORDER_STATUS_")  # type: ignore[arg-type]
    except ValueError:
        return f"UNKNOWN({value})"  # refused by the use case as not an OrderStatus


class OrderServicer(orders_pb2_grpc.OrderServiceServicer):
    def __init__(self, orders: Orders) -> None:
        self._orders = orders

    async def CreateOrder(
        self, request: orders_pb2.CreateOrderRequest, context: Context
    ) -> orders_pb2.Order:
        order = await self._orders.create_order(
            CreateOrder(
                user_id=request.user_id,
                currency=request.amount.currency_code,
                amount_minor=request.amount.amount_minor,
                promo_code=request.promo_code if request.HasField("promo_code") else None,
                idempotency_key=request.idempotency_key,
                amount_given=request.HasField("amount"),
                lines=line_inputs(request.lines),
                shipping=optional_money(request.shipping, request.HasField("shipping")),
            )
        )
        return order_message(order)

    async def GetOrder(
        self, request: orders_pb2.GetOrderRequest, context: Context
    ) -> orders_pb2.Order:
        return order_message(await self._orders.get_order(request.id))

    async def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, context: Context
    ) -> orders_pb2.ListOrdersResponse:
        time_range = request.create_time_range
        page = await self._orders.list_orders(
            ListOrders(
                page_size=request.page_size,
                page_token=request.page_token,
                user_id=request.user_id,
                status=_status_filter(request.status),
                created_from=time_range.start_time.ToDatetime(tzinfo=UTC)
                if time_range.HasField("start_time")
                else None,
                created_until=time_range.end_time.ToDatetime(tzinfo=UTC)
                if time_range.HasField("end_time")
                else None,
            )
        )
        return orders_pb2.ListOrdersResponse(
            orders=[order_message(o) for o in page.orders], next_page_token=page.next_page_token
        )

    async def CancelOrder(
        self, request: orders_pb2.CancelOrderRequest, context: Context
    ) -> orders_pb2.Order:
        order = await self._orders.cancel_order(CancelOrder(request.id, request.reason))
        return order_message(order)
