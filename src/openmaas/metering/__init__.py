"""Metering: per-request usage records (for quotas and billing) and the audit log."""

from openmaas.metering.audit import AuditEvent, AuditLog
from openmaas.metering.usage import UsageRecord, UsageRecorder, UsageTotals

__all__ = ["AuditEvent", "AuditLog", "UsageRecord", "UsageRecorder", "UsageTotals"]
