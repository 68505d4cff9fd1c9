//! The one place that classifies AWS errors.

use std::error::Error as StdError;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde::Serialize;

/// What the engine does about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Rate limited: retry with backoff and jitter (the SDK's standard retry does the first ones).
    Throttled,
    /// Already gone: fine when deleting.
    NotFound,
    /// Exists already: adopt it.
    AlreadyExists,
    /// Still in use by something else: retry the delete within a deadline.
    DependencyViolation,
    /// The request was wrong: fail, naming the field.
    InvalidInput,
    /// Credentials missing, expired or not allowed.
    AccessDenied,
    /// The endpoint could not be reached or did not answer.
    Unreachable,
    Other,
}

/// A failed AWS call, classified.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} failed: {message}{}", hint(*.class))]
pub struct AwsError {
    /// `ec2:RunInstances`, …
    pub op: String,
    pub class: ErrorClass,
    /// The AWS error code, when the service sent one.
    pub code: Option<String>,
    pub message: String,
}

fn hint(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::AccessDenied => {
            "\n  help: check the credentials in your environment or profile; AWS Academy session credentials expire every few hours"
        }
        ErrorClass::Unreachable => {
            "\n  help: check --endpoint-url / AWS_ENDPOINT_URL and your network; is the emulator running?"
        }
        _ => "",
    }
}

/// Classifies an AWS error code.
pub fn classify_code(code: &str) -> ErrorClass {
    match code {
        "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "PriorRequestNotComplete"
        | "SlowDown" => ErrorClass::Throttled,
        "DependencyViolation"
        | "ResourceInUse"
        | "ResourceInUseException"
        | "InvalidIPAddress.InUse"
        | "HostedZoneNotEmpty"
        | "FileSystemInUse"
        | "VolumeInUse"
        | "InvalidDBClusterStateFault"
        | "InvalidDBInstanceState"
        | "InvalidDBInstanceStateFault"
        | "InvalidDBSubnetGroupStateFault" => ErrorClass::DependencyViolation,
        "UnauthorizedOperation"
        | "AccessDenied"
        | "AccessDeniedException"
        | "AuthFailure"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "SignatureDoesNotMatch" => ErrorClass::AccessDenied,
        c if c.ends_with("NotFound")
            || c.ends_with("NotFoundFault")
            || c.contains("NotFound.")
            || c.starts_with("NoSuch") =>
        {
            ErrorClass::NotFound
        }
        "ParameterNotFound" | "InvalidGroupId.Malformed" => ErrorClass::NotFound,
        c if c.contains("Duplicate") || c.contains("AlreadyExists") => ErrorClass::AlreadyExists,
        c if c.starts_with("Invalid")
            || c.starts_with("Validation")
            || c.starts_with("MissingParameter")
            || c == "MountTargetConflict" =>
        {
            ErrorClass::InvalidInput
        }
        _ => ErrorClass::Other,
    }
}

/// The Display of an error and of each of its sources, joined with ": " (repeats dropped): one
/// line, never a Debug dump.
fn causes(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && parts.last() != Some(&text) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// The Display of the deepest source of an error.
fn innermost(err: &(dyn StdError + 'static)) -> String {
    let mut e = err;
    while let Some(inner) = e.source() {
        e = inner;
    }
    e.to_string()
}

impl AwsError {
    /// Wraps an SDK error with the operation's name.
    pub fn from_sdk<E, R>(op: &str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let (class, code, message) = match &err {
            SdkError::ServiceError(se) => {
                let e = se.err();
                let code = e.code().map(str::to_string);
                let mut class = code
                    .as_deref()
                    .map(classify_code)
                    .unwrap_or(ErrorClass::Other);
                // Auto Scaling reports a missing group or policy as a validation error
                // ("AutoScalingGroup name not found - …").
                if code.as_deref() == Some("ValidationError")
                    && e.message()
                        .is_some_and(|m| m.to_ascii_lowercase().contains("not found"))
                {
                    class = ErrorClass::NotFound;
                }
                let msg = match (e.message(), http_status(&err)) {
                    (Some(m), _) => m.to_string(),
                    // A bare 5xx (or any answer without an error body): one line, not a dump.
                    (None, Some(status)) if code.is_none() => {
                        format!("HTTP {status} without an error message")
                    }
                    (None, _) => causes(&err),
                };
                (class, code, msg)
            }
            SdkError::ResponseError(_) if http_status(&err).is_some() => (
                ErrorClass::Other,
                None,
                format!(
                    "HTTP {} with a response that could not be read",
                    http_status(&err).unwrap_or_default()
                ),
            ),
            // The request never got an answer: the innermost cause says why (connection
            // refused, DNS, TLS, a timeout), without the SDK's Debug dump of the whole chain.
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => (
                ErrorClass::Unreachable,
                None,
                format!("no answer: {}", innermost(&err)),
            ),
            _ => (ErrorClass::Other, None, causes(&err)),
        };
        // A service's message may span lines (an HTML error page, a stack trace): errors are
        // one line.
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        let message = match &code {
            Some(c) => format!("{c}: {message}"),
            None => message,
        };
        AwsError {
            op: op.to_string(),
            class,
            code,
            message,
        }
    }

    /// An error raised by `iac` itself about cloud state (missing default VPC, …).
    pub fn state(op: &str, class: ErrorClass, message: impl Into<String>) -> Self {
        AwsError {
            op: op.to_string(),
            class,
            code: None,
            message: message.into(),
        }
    }

    /// The error on one line, without its hint: `service:Operation failed: Code: message`
    /// (for reports that go on when one call fails).
    pub fn line(&self) -> String {
        format!("{} failed: {}", self.op, self.message)
    }

    pub fn is(&self, class: ErrorClass) -> bool {
        self.class == class
    }

    /// What AWS answers, for a few seconds, about a resource created a moment ago that the
    /// called service cannot see yet (EC2 and IAM are eventually consistent): a new security
    /// group (`InvalidGroup.NotFound`) or a new instance profile ("Invalid IAM Instance
    /// Profile", from RunInstances or CreateAutoScalingGroup). Retried for a bounded time only
    /// right after that create; anywhere else these errors mean what they say.
    pub fn is_not_yet_visible(&self) -> bool {
        match self.code.as_deref() {
            Some("InvalidGroup.NotFound") => true,
            Some("InvalidParameterValue" | "InvalidParameterCombination" | "ValidationError") => {
                self.message
                    .to_ascii_lowercase()
                    .contains("invalid iam instance profile")
            }
            _ => false,
        }
    }
}

/// The HTTP status of the answer behind an SDK error, when there was one.
fn http_status<E, R: 'static>(err: &SdkError<E, R>) -> Option<u16> {
    let raw: &dyn std::any::Any = err.raw_response()?;
    raw.downcast_ref::<aws_smithy_runtime_api::client::orchestrator::HttpResponse>()
        .map(|r| r.status().as_u16())
}

/// `map_err(sdk("ec2:RunInstances"))`: wraps an SDK error with the operation's name.
pub fn sdk<E, R>(op: &str) -> impl FnOnce(SdkError<E, R>) -> AwsError + '_
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |e| AwsError::from_sdk(op, e)
}

/// Extension for results: treat "not found" as success (for deletes).
pub trait IgnoreNotFound<T> {
    fn ignore_not_found(self) -> Result<Option<T>, AwsError>;
}

impl<T> IgnoreNotFound<T> for Result<T, AwsError> {
    fn ignore_not_found(self) -> Result<Option<T>, AwsError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is(ErrorClass::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify_code("RequestLimitExceeded"), ErrorClass::Throttled);
        assert_eq!(classify_code("InvalidGroup.NotFound"), ErrorClass::NotFound);
        assert_eq!(
            classify_code("InvalidInstanceID.NotFound"),
            ErrorClass::NotFound
        );
        assert_eq!(classify_code("NoSuchHostedZone"), ErrorClass::NotFound);
        assert_eq!(
            classify_code("InvalidGroup.Duplicate"),
            ErrorClass::AlreadyExists
        );
        assert_eq!(
            classify_code("InvalidKeyPair.Duplicate"),
            ErrorClass::AlreadyExists
        );
        assert_eq!(
            classify_code("DependencyViolation"),
            ErrorClass::DependencyViolation
        );
        assert_eq!(
            classify_code("InvalidParameterValue"),
            ErrorClass::InvalidInput
        );
        assert_eq!(classify_code("ExpiredToken"), ErrorClass::AccessDenied);
        assert_eq!(
            classify_code("DBClusterNotFoundFault"),
            ErrorClass::NotFound
        );
        assert_eq!(
            classify_code("InvalidDBClusterStateFault"),
            ErrorClass::DependencyViolation
        );
        assert_eq!(
            classify_code("FileSystemInUse"),
            ErrorClass::DependencyViolation
        );
    }

    fn coded(code: &str, message: &str) -> AwsError {
        AwsError {
            op: "ec2:RunInstances".into(),
            class: classify_code(code),
            code: Some(code.into()),
            message: format!("{code}: {message}"),
        }
    }

    #[test]
    fn a_failed_call_is_one_line_naming_the_operation_and_the_code() {
        use aws_sdk_ssm::operation::get_parameter::GetParameterError;
        use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;
        let answer = |status: u16, meta: ErrorMetadata| {
            let status = StatusCode::try_from(status).expect("a status");
            AwsError::from_sdk(
                "ssm:GetParameter",
                SdkError::service_error(
                    GetParameterError::generic(meta),
                    HttpResponse::new(status, SdkBody::empty()),
                ),
            )
        };
        let e = answer(
            400,
            ErrorMetadata::builder()
                .code("ValidationException")
                .message("bad value\n  for Name\n")
                .build(),
        );
        assert_eq!(
            e.line(),
            "ssm:GetParameter failed: ValidationException: bad value for Name"
        );
        assert_eq!(e.to_string(), e.line());
        // A bare server error (an emulator's unimplemented call): no dump of the answer.
        let e = answer(500, ErrorMetadata::builder().build());
        assert_eq!(
            e.line(),
            "ssm:GetParameter failed: HTTP 500 without an error message"
        );
    }

    #[test]
    fn what_a_fresh_resource_answers_is_retried() {
        assert!(coded(
            "InvalidGroup.NotFound",
            "The security group 'sg-1' does not exist"
        )
        .is_not_yet_visible());
        assert!(coded(
            "InvalidParameterValue",
            "Value (p) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"
        )
        .is_not_yet_visible());
        assert!(
            coded("ValidationError", "Invalid IAM Instance Profile name: p").is_not_yet_visible()
        );
        assert!(
            !coded("InvalidParameterValue", "Invalid value for instance type").is_not_yet_visible()
        );
        assert!(!coded("InvalidInstanceID.NotFound", "no such instance").is_not_yet_visible());
    }
}
