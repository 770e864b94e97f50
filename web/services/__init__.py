"""The one place where the REST API and the Gradio UI read and change things, one module per domain.

    common     errors (ServiceError and its kinds) and small helpers
    access     who may do what: actions, the roles allowed each, `require` / `can`
    datasets   validated uploads (an identical file answers with its dataset), listing, rename, delete
    jobs       submit, list, detail, metrics, logs, events; cancel, resume, rename, delete (owner or admin)
    models     listing, files, rename, delete (owner or admin)
    compare    models side by side: their evaluations and training curves
    estimates  size, memory and time of a run before it is submitted (the kind's own estimate)
    users      user management for admins: add, change role, disable, reset password
    workers    the job workers' device slots and the running jobs holding them

Both front ends call these functions, so a rule (who may upload, what an upload must look like, when
a job is sent to the queue) is written once. Sessions: functions that change things take an open
`Session` first and commit it themselves when the change is complete (so "nothing stored half-way"
is decided here, not by the caller). Functions that only read take `session=None` as a keyword: the
API passes its request session, the UI may leave it out and a short `session_scope()` is opened.
Read functions return plain dicts (JSON-ready); creators return the ORM row.

Everything is re-exported here: callers write `services.submit_job(...)`.
"""

from web.services.access import (ALLOWED_ROLES, Action, can, can_change, get_user, require, require_owner,
                                 resolve_user)
from web.services.compare import compare_models
from web.services.common import (Conflict, InvalidInput, NotFound, PermissionDenied, ServiceError, UploadTooLarge,
                                 parse_enum)
from web.services.datasets import (ALLOWED_EXTENSIONS, DatasetDependents, StoredUpload, check_upload_size,
                                   dataset_dependents, dataset_to_dict, delete_dataset, get_dataset, length_histogram,
                                   list_datasets, rename_dataset, store_dataset_upload, upload_extension)
from web.services.estimates import ASSUMED_UTILISATION, check_run, estimate_peak_flops, estimate_run
from web.services.jobs import (cancel_job, delete_job, get_job_detail, job_dependents, job_events, job_kinds, job_logs,
                               job_metrics, latest_metrics, list_jobs, rename_job, resume_job, step_reached, submit_job)
from web.services.models import (CHAT_MODEL_KINDS, delete_model, get_model, import_model, importable_models, list_models,
                                 list_models_with_sizes, model_dependents, model_dir, model_to_dict, model_zip,
                                 rename_model)
from web.services.users import add_user, change_user, find_user, list_users, reset_password, user_to_dict
from web.services.workers import with_device_jobs, worker_devices
