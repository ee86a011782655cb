"""
An app in the shape users copy: a settings object, one lifespan, routers that ask for clients.

    HTTP_CLIENTS__BILLING__BASE_URL=https://billing.internal/api/ \
    HTTP_CLIENTS__SHIPPING__BASE_URL=https://shipping.internal/ \
    uvicorn --factory examples.app:create_app
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException

from fastapi_retry_http import Client, HttpClientsSettings, clients_lifespan, get_client


class Settings(HttpClientsSettings):
    """Everything from the environment: `HTTP_CLIENTS__<NAME>__<FIELD>`, never echoed in errors."""


Billing = Annotated[Client, Depends(get_client("billing"))]
Shipping = Annotated[Client, Depends(get_client("shipping"))]

router = APIRouter(prefix="/orders")


@router.get("/{order_id}")
async def order(order_id: int, billing: Billing, shipping: Shipping) -> dict[str, Any]:
    # GETs are idempotent: 503s, 429s and dropped connections are retried for us.
    invoice = await billing.get(f"invoices/{order_id}")
    parcel = await shipping.get(f"parcels/{order_id}")
    if invoice.is_error or parcel.is_error:
        raise HTTPException(502, "an upstream failed after its retries")
    return {"invoice": invoice.json(), "parcel": parcel.json()}


@router.post("/{order_id}/charge")
async def charge(order_id: int, billing: Billing) -> dict[str, Any]:
    # A POST is never sent twice once the server may have seen it...
    response = await billing.post("charges", json={"order": order_id})
    return {"upstream_status": response.status_code}


@router.post("/{order_id}/refund")
async def refund(order_id: int, billing: Billing) -> dict[str, Any]:
    # ...unless it carries an Idempotency-Key: the server applies it once, so it is retried.
    response = await billing.post(
        "refunds", json={"order": order_id}, headers={"Idempotency-Key": f"refund-{order_id}"}
    )
    return {"upstream_status": response.status_code}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app factory: clients are built at startup and closed at shutdown."""
    settings = settings if settings is not None else Settings()
    app = FastAPI(title="orders", lifespan=clients_lifespan(settings.http_clients))
    app.include_router(router)
    return app
