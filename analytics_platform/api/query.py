"""A small builder for the list endpoints' SELECTs: only the filters a request gives become SQL
(so the planner sees plain equalities, never `$1 IS NULL OR col = $1`), the keyset condition of a
cursor, the order and the limit. Values are always parameters; column names are this code's own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request, Response

from analytics_platform.api.caching import by_body
from analytics_platform.api.respond import page_response


class Select:
    def __init__(self, columns: str, table: str) -> None:
        self.columns = columns
        self.table = table
        self.conditions: list[str] = []
        self.params: dict[str, Any] = {}

    def _param(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"%({name})s"

    def eq(self, column: str, value: Any) -> Select:
        """`column = value`, or nothing when value is None (the filter was not asked for)."""
        if value is not None:
            self.conditions.append(f"{column} = {self._param(value)}")
        return self

    def cmp(self, column: str, op: str, value: Any) -> Select:
        if value is not None:
            self.conditions.append(f"{column} {op} {self._param(value)}")
        return self

    def cond(self, template: str, *values: Any) -> Select:
        """A condition of this code's own, `{}` marking each value: cond("factory_id IN ({}, '*')", f)."""
        self.conditions.append(template.format(*(self._param(v) for v in values)))
        return self

    def after(self, columns: Sequence[str], values: Sequence[Any] | None, *, descending: bool = False) -> Select:
        """Rows strictly after a cursor's key in the listing's order (row comparison, index friendly)."""
        if values is not None:
            marks = ", ".join(self._param(v) for v in values)
            self.conditions.append(f"({', '.join(columns)}) {'<' if descending else '>'} ({marks})")
        return self

    def sql(self, order_by: Sequence[str], limit: int, *, descending: bool = False) -> tuple[str, dict[str, Any]]:
        where = " AND ".join(self.conditions) or "true"
        direction = " DESC" if descending else ""
        order = ", ".join(f"{c}{direction}" for c in order_by)
        return (
            f"SELECT {self.columns} FROM {self.table} WHERE {where} ORDER BY {order} LIMIT {self._param(limit)}",
            self.params,
        )


def fetch_page(
    request: Request,
    select: Select,
    *,
    key: Sequence[str],
    limit: int,
    columns: Sequence[str],
    csv_allowed: bool = True,
    descending: bool = False,
) -> Response:
    """Run a listing's SELECT for one page (limit + 1 rows: the extra one only says a next page
    exists) on the read-only pool and answer it as JSON or CSV."""
    query, params = select.sql(key, limit + 1, descending=descending)
    with request.app.state.db.connection() as conn:
        rows = conn.execute(query, params, binary=True).fetchall()  # binary: no parsing of timestamps as text
    response = page_response(request, rows, limit=limit, key=key, columns=columns, csv_allowed=csv_allowed)
    return by_body(request, response)
