"""Transaction costs on the Casablanca Stock Exchange, and reading ``--costs``.

A trade of value ``X`` in shares on the CSE pays, on each side (buy or sell):

=====================================  =========  ===========================================
commission                             rate (HT)  source
=====================================  =========  ===========================================
brokerage (société de bourse)          ≤ 0.60 %   La Vie Éco, "Le coût d'une transaction"
                                                  (2006): the regulatory maximum for shares,
                                                  negotiable
exchange (Bourse de Casablanca S.A.)   0.10 %     same article (maximum 0.1 % on shares);
                                                  confirmed unchanged by the exchange in 2017
                                                  (TelQuel, 30 Nov 2017: "la Bourse de
                                                  Casablanca est à 0,1% sur la tarification
                                                  des négociations")
settlement-delivery (custodian bank)   0.20 %     finanside, "Liquidité: cas du Maroc" (2014),
                                                  a worked example: collection 0.1 %,
                                                  settlement 0.2 % when a bank keeps the account
VAT on the commissions                 10 %       Morocco's VAT rate on banking and financial
                                                  services (the 2014 example still used 7 %)
=====================================  =========  ===========================================

URLs: https://www.lavieeco.com/argent/le-cout-dune-transaction-5989/,
https://telquel.ma/2017/11/30/la-bourse-de-casablanca-reamenage-sa-tarification_1570813,
https://finanside.blogspot.com/2014/09/liquidite-cas-du-maroc.html. The project's research
notes (``shared/research/cse-data.md``) hold no fee schedule, and no broker's current price
list was available offline, so the default is these *published maxima*: 0.9 % HT, **0.99 %** with
VAT, per side. Online brokers charge less brokerage (often 0.3–0.45 %); pass ``--costs`` with
your own rate. The order-collection fee (0.1 % in the 2014 example) is left out: it is charged
by some banks only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from streamfolio.errors import DataError

__all__ = ["CSE_COSTS", "CostSchedule", "parse_costs"]


@dataclass(frozen=True, slots=True)
class CostSchedule:
    """Proportional costs per side of a trade, as fractions of the value traded."""

    brokerage: float
    exchange: float
    settlement: float
    vat: float
    name: str = "custom"

    @property
    def rate(self) -> float:
        """All commissions with VAT, per side.

        >>> round(CSE_COSTS.rate, 6)
        0.0099
        """
        return (self.brokerage + self.exchange + self.settlement) * (1.0 + self.vat)

    def describe(self) -> str:
        """One line for the report."""
        if self.name == "custom":
            return f"{self.rate:.4%} per side (given)"
        return (
            f"{self.rate:.4%} per side: brokerage {self.brokerage:.2%} + exchange "
            f"{self.exchange:.2%} + settlement {self.settlement:.2%}, VAT {self.vat:.0%} "
            f"({self.name})"
        )


CSE_COSTS = CostSchedule(
    brokerage=0.006, exchange=0.001, settlement=0.002, vat=0.10, name="CSE published maxima"
)
"""The default: the CSE's published maximum commissions with VAT (see the module's table)."""


_BPS = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(bps?|bp|%)?\s*$", re.IGNORECASE)


def parse_costs(text: str) -> CostSchedule:
    """``cse`` (the default schedule), ``0``, a fraction (``0.005``), ``25bp`` or ``0.4%``.

    >>> parse_costs("cse") is CSE_COSTS
    True
    >>> [round(parse_costs(t).rate, 6) for t in ("0", "0.005", "25bp", "0.4%")]
    [0.0, 0.005, 0.0025, 0.004]
    """
    if text.strip().lower() in ("cse", "default"):
        return CSE_COSTS
    match = _BPS.match(text)
    if match is None:
        raise DataError(f"--costs {text!r}: expected cse, a fraction such as 0.005, 25bp or 0.4%")
    number = float(match.group(1))
    unit = (match.group(2) or "").lower()
    rate = number / 10_000 if unit.startswith("bp") else number / 100 if unit == "%" else number
    if not (math.isfinite(rate) and 0.0 <= rate < 0.2):
        raise DataError(f"--costs {text!r}: a rate per side of {rate:.4g} is not plausible")
    return CostSchedule(brokerage=rate, exchange=0.0, settlement=0.0, vat=0.0)
