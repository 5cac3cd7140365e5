"""Forms that queue backtests and sweeps and import tick files: shared by the admin and the Backtests page, so both
refuse the same bad input with the same field named."""
from __future__ import annotations

import json
from typing import Any

from django import forms

from backtests.data import SyntheticSpec
from backtests.models import BacktestRun, MarketDataset, Sweep
from backtests.replay import parse_start_position
from trading.core.params import StrategyParams
from trading.errors import ConfigError


def _json_field(label: str, help_text: str, required: bool = False, initial: str = "") -> forms.CharField:
    return forms.CharField(label=label, required=required, initial=initial, help_text=help_text,
                           widget=forms.Textarea(attrs={"rows": 2, "cols": 80, "style": "font-family: monospace"}))


def _parse_json(form: forms.Form, name: str, default: Any) -> Any:
    text = (form.cleaned_data.get(name) or "").strip()
    if not text:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        form.add_error(name, f"not valid JSON: {exc}")
        return default


class _DataSourceForm(forms.ModelForm):
    synthetic_text = _json_field("synthetic spec", 'leave empty to use the dataset, e.g. {"seed": 7, "days": 5, '
                                 '"realized_vol": 0.8, "implied_vol": 0.35}')

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        synthetic = _parse_json(self, "synthetic_text", None)
        if synthetic is not None:
            try:
                synthetic = SyntheticSpec.from_dict(synthetic).to_dict()
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
        data["grid_parsed"] = _parse_json(self, "grid_text", {})
        data["base_parsed"] = _parse_json(self, "base_text", {})
        return data



class DatasetImportForm(forms.ModelForm):
    csv_file = forms.FileField(label="tick CSV", help_text="header ts,bid,ask with optional last,iv; ts ISO 8601 with "
                               "offset or epoch seconds, strictly increasing")

    class Meta:
        model = MarketDataset
        fields = ("name",)
