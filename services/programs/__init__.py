"""Cash-transfer programs: their schedules, effective-dated entitlement rules, funds and appropriations.

The payment runs build on this package:

- :func:`services.programs.service.get_program` → :class:`~services.programs.models.Program` (currency,
  schedule, ``fund_account``, ``in_transit_account``);
- :func:`services.programs.periods.parse_period` and :class:`~services.programs.periods.Period`;
- :func:`services.programs.service.rule_version_for` → the rule version in force for a period;
- :func:`services.programs.rules.entitlements_sql` → the set-based SELECT of every household's entitlement.
"""
