"""Forms that queue backtests and sweeps and import tick files: shared by the admin and the Backtests page, so both
refuse the same bad input with the same field named."""
from __future__ import annotations

import io
import json
from typing import Any

from django import forms
from django.http import HttpRequest

from backtests import data as tickdata
from backtests import services
from backtests.models import BacktestRun, MarketDataset, Sweep
from backtests.replay import parse_start_position
from backtests.throttles import queue_budget_spend, queue_refusal
from bifrost.jsonlimits import json_problem, json_text_problem
from trading.core.params import StrategyParams
from trading.errors import ConfigError, DataFileError


def _json_field(label: str, help_text: str, required: bool = False, initial: str = "") -> forms.CharField:
    return forms.CharField(label=label, required=required, initial=initial, help_text=help_text,
                           widget=forms.Textarea(attrs={"rows": 2, "cols": 80, "style": "font-family: monospace"}))


def _parse_json(form: forms.Form, name: str, default: Any) -> Any:
    """The field's JSON, or `default` with the error on the field: not JSON, too deep, a NUL character."""
    text = (form.cleaned_data.get(name) or "").strip()
    if not text:
        return default
    found = json_text_problem(text)  # before parsing: Python's parser recurses
    problem = found[0] if found is not None else None
    if problem is None:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            problem = f"not valid JSON: {exc}"
        else:
            problem = json_problem(value)
    if problem is not None:
        form.add_error(name, problem)
        return default
    return value


class _QueueForm(forms.ModelForm):
    """A form that queues work. Made `for_request`, a valid form spends one of the user's queue budget (the API's
    own counter) and is refused, with `throttled` set, when the budget is spent."""

    request: HttpRequest | None = None
    throttled = False

    @classmethod
    def for_request(cls, request: HttpRequest) -> type[_QueueForm]:
        return type(cls.__name__, (cls,), {"request": request})

    def full_clean(self) -> None:
        super().full_clean()
        if self.request is None or not self.is_bound or self._errors:
            return
        wait_s = queue_budget_spend(self.request)
        if wait_s is not None:
            self.throttled = True
            self.add_error(None, queue_refusal(wait_s))


class _DataSourceForm(_QueueForm):
    synthetic_text = _json_field("synthetic spec", 'leave empty to use the dataset, e.g. {"seed": 7, "days": 5, '
                                 '"realized_vol": 0.8, "implied_vol": 0.35}')

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        synthetic = _parse_json(self, "synthetic_text", None)
        if synthetic is not None:
            try:
                synthetic = services.synthetic_spec_check(synthetic=synthetic)
            except ConfigError as exc:
                self.add_error("synthetic_text", f"{exc.field}: {exc.reason}")
        if (data.get("dataset") is None) == (synthetic is None):
            self.add_error(None, "choose a dataset or give a synthetic spec (exactly one)")
        data["synthetic_spec"] = synthetic
        try:
            parse_start_position(data.get("start_position"))
        except ConfigError as exc:
            self.add_error("start_position", exc.reason)
        return data


class BacktestRunForm(_DataSourceForm):
    params_text = _json_field("params", "strategy params as JSON; missing keys take defaults", initial="{}")
    path_choice = forms.ChoiceField(label="path", choices=[(p, p) for p in ("auto", "fast", "per_event")],
                                    initial="auto")

    class Meta:
        model = BacktestRun
        fields = ("dataset", "start_position")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        params = _parse_json(self, "params_text", {})
        try:
            data["params_parsed"] = StrategyParams.from_dict(params).to_dict()
        except ConfigError as exc:
            self.add_error("params_text", f"{exc.field}: {exc.reason}")
        return data


class SweepForm(_DataSourceForm):
    grid_text = _json_field("grid", '{"cooldown_s": [0, 30, 60], "min_price_move_bps": [0, 10, 20]} or a list '
                            '[{"cooldown_s": 0}, ...]', required=True)
    base_text = _json_field("base params", "params every set starts from (missing keys take defaults)", initial="{}")

    class Meta:
        model = Sweep
        fields = ("name", "dataset", "objective", "start_position")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        data["grid_parsed"] = grid = _parse_json(self, "grid_text", {})
        data["base_parsed"] = base = _parse_json(self, "base_text", {})
        if self.has_error("grid_text") or self.has_error("base_text"):
            return data
        if not isinstance(base, dict):
            self.add_error("base_text", f"expected a JSON object of params, got {type(base).__name__}")
            return data
        try:
            StrategyParams.from_dict(base)
        except ConfigError as exc:
            self.add_error("base_text", f"{exc.field}: {exc.reason}")
            return data
        try:  # the service's own check (the cap included), so the refusal lands on the grid before anything queues
            services.sweep_param_sets(grid=grid, base=base)
        except ConfigError as exc:
            self.add_error("grid_text", f"{exc.field}: {exc.reason}")
        return data


class DatasetImportForm(forms.ModelForm):
    """A tick CSV: refused over BIFROST_UPLOAD_MAX_MB; up to BIFROST_UPLOAD_INLINE_MAX_MB it is parsed here in full
    (`ticks` in cleaned_data, a bad row refused on the field with its line); larger files go to a worker."""

    csv_file = forms.FileField(label="tick CSV", help_text="header ts,bid,ask with optional last,iv; ts ISO 8601 with "
                               "offset or epoch seconds, strictly increasing")

    class Meta:
        model = MarketDataset
        fields = ("name",)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        data["ticks"] = None
        upload = data.get("csv_file")
        if upload is None:
            return data
        try:
            inline = services.dataset_upload_check(size_bytes=int(upload.size or 0))
        except ConfigError as exc:
            self.add_error("csv_file", exc.reason)
            return data
        if inline:
            upload.seek(0)
            text = io.TextIOWrapper(upload.file, encoding="utf-8", newline="")
            try:
                data["ticks"] = tickdata.read_ticks_csv(text)
            except DataFileError as exc:
                self.add_error("csv_file", f"refused, nothing imported: line {exc.line}: {exc.reason}")
            except UnicodeDecodeError as exc:
                self.add_error("csv_file", f"refused, nothing imported: not UTF-8 text (byte {exc.start}: "
                                           f"{exc.reason})")
            finally:
                text.detach()  # the upload stays open for the admin
        return data
