"""Shipment facts from the seller's CSV/TSV: our columns or Amazon's, re-import updates, bad rows skipped by line."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pipeline.errors import PipelineError
from pipeline.schema import Shipment
from pipeline.shipments import ImportReport, import_shipments
from pipeline.store import Store

OURS = """order_id,carrier,tracking_number,ship_date,delivered_date
111-2233445-5566778,UPS,1Z4V82W80312457006,2026-10-29,2026-11-03
112-3344556-6677889,USPS,9400 1118 9922 3854 7120 68,2026-10-30,
"""


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = Store(db_url)
    yield store
    store.dispose()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'pipeline.db'}")
    yield store
    store.dispose()


def write(tmp_path: Path, text: str, name: str = "shipments.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def rows(store: Store) -> dict[str, tuple[object, ...]]:
    with store.session() as session:
        return {
            s.order_id: (s.carrier, s.tracking_number, s.ship_date, s.delivered_date)
            for s in session.scalars(select(Shipment))
        }


def run_import(store: Store, path: Path) -> ImportReport:
    with store.session() as session:
        return import_shipments(session, path)


def test_our_columns(store: Store, tmp_path: Path) -> None:
    report = run_import(store, write(tmp_path, OURS))
    assert (report.added, report.updated, report.unchanged, report.skipped) == (2, 0, 0, [])
    assert report.order_ids == ["111-2233445-5566778", "112-3344556-6677889"]
    assert rows(store) == {
        "111-2233445-5566778": ("UPS", "1Z4V82W80312457006", date(2026, 10, 29), date(2026, 11, 3)),
        "112-3344556-6677889": ("USPS", "9400111899223854712068", date(2026, 10, 30), None),
    }


def test_reimport_updates_and_never_duplicates(store: Store, tmp_path: Path) -> None:
    run_import(store, write(tmp_path, OURS))
    again = run_import(store, write(tmp_path, OURS))
    assert (again.added, again.updated, again.unchanged) == (0, 0, 2)
    later = OURS.replace("2026-10-30,\n", "2026-10-30,2026-11-06\n")
    report = run_import(store, write(tmp_path, later))
    assert (report.added, report.updated, report.unchanged) == (0, 1, 1)
    assert rows(store)["112-3344556-6677889"][3] == date(2026, 11, 6)
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Shipment)) == 2


def test_an_empty_cell_never_erases_a_known_value(sqlite_store: Store, tmp_path: Path) -> None:
    run_import(sqlite_store, write(tmp_path, OURS))
    report = run_import(
        sqlite_store,
        write(tmp_path, "order_id,carrier,tracking_number,ship_date,delivered_date\n111-2233445-5566778,,,,\n"),
    )
    assert report.unchanged == 1
    assert rows(sqlite_store)["111-2233445-5566778"] == (
        "UPS",
        "1Z4V82W80312457006",
        date(2026, 10, 29),
        date(2026, 11, 3),
    )


def test_bad_rows_are_reported_with_their_line_and_skipped(sqlite_store: Store, tmp_path: Path) -> None:
    text = (
        "order_id,carrier,tracking_number,ship_date,delivered_date\n"
        "111-2233445-5566778,UPS,1Z4V82W80312457006,2026-10-29,2026-11-03\n"
        "111-22334-5566778,UPS,1Z,2026-10-29,\n"
        "\n"
        "113-1111111-2222222,DHL,JJD01,29.10.2026,\n"
        "114-1111111-2222222,DHL,JJD02,2026-11-05,2026-11-01\n"
        '"115-1111111-2222222",DHL,"JJD03",2026-10-29,2026-11-02\n'
    )
    report = run_import(sqlite_store, write(tmp_path, text))
    assert report.added == 2
    assert report.skipped == [
        (3, "order_id '111-22334-5566778' is not an Amazon order ID (123-1234567-1234567)"),
        (5, "ship_date '29.10.2026' is not an ISO 8601 date (YYYY-MM-DD)"),
        (6, "delivered_date 2026-11-01 is before ship_date 2026-11-05"),
    ]
    assert set(rows(sqlite_store)) == {"111-2233445-5566778", "115-1111111-2222222"}


def test_amazons_shipment_confirmation_tsv(sqlite_store: Store, tmp_path: Path) -> None:
    text = (
        "order-id\torder-item-id\tquantity\tship-date\tcarrier-code\tcarrier-name\ttracking-number\tship-method\n"
        "111-2233445-5566778\t12345678901234\t1\t2026-10-29T10:15:00-07:00\tUPS\t\t1z4v82w80312457006\tGround\n"
        "112-3344556-6677889\t12345678901235\t1\t2026-10-30\tOther\tYunExpress\tYT2530101234567890\tStandard\n"
        "113-4455667-7788990\t12345678901236\t1\t2026-10-30\tOther\t\tXX1\tStandard\n"
    )
    report = run_import(sqlite_store, write(tmp_path, text, "confirm.txt"))
    assert (report.added, report.skipped) == (3, [])
    assert rows(sqlite_store) == {
        "111-2233445-5566778": ("UPS", "1Z4V82W80312457006", date(2026, 10, 29), None),
        "112-3344556-6677889": ("YunExpress", "YT2530101234567890", date(2026, 10, 30), None),
        "113-4455667-7788990": (None, "XX1", date(2026, 10, 30), None),
    }


def test_header_names_are_forgiving_and_a_bom_is_ignored(sqlite_store: Store, tmp_path: Path) -> None:
    text = "Order ID,Carrier,Tracking Number,Ship-Date,Delivery Date\n111-2233445-5566778,DHL,JJD1,2026-10-29,\n"
    report = run_import(sqlite_store, write(tmp_path, text, encoding="utf-8-sig"))
    assert report.added == 1
    assert rows(sqlite_store)["111-2233445-5566778"] == ("DHL", "JJD1", date(2026, 10, 29), None)


def test_a_file_without_an_order_id_column_is_refused(sqlite_store: Store, tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"no order_id column .* found: carrier, tracking_number"):
        run_import(sqlite_store, write(tmp_path, "carrier,tracking_number\nUPS,1Z\n"))


@pytest.mark.parametrize(("content", "message"), [(None, "no such file"), (b"\xff\xfe\x00o", "not UTF-8 text")])
def test_unreadable_files(sqlite_store: Store, tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "shipments.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PipelineError, match=message):
        run_import(sqlite_store, path)


def test_orders_import_command(desk_env, tmp_path: Path) -> None:
    path = write(tmp_path, OURS + "bad-order,UPS,1Z,2026-10-29,\n")
    result = desk_env.cli("orders", "import", str(path))
    assert result.output.splitlines() == [
        f"{path}:4: skipped: order_id 'bad-order' is not an Amazon order ID (123-1234567-1234567)",
        "2 added, 0 updated, 0 unchanged, 1 skipped",
    ]
    again = desk_env.cli("orders", "import", str(path))
    assert again.output.splitlines()[-1] == "0 added, 0 updated, 2 unchanged, 1 skipped"
    missing = desk_env.cli("orders", "import", str(tmp_path / "nope.csv"), expect=None)
    assert missing.exit_code != 0 and "no such file" in missing.output and "Traceback" not in missing.output
