"""Mobile numbers as the API takes them: country code + national number, digits only.

With `[input] default_country` set, rows/rewrite.py hands every mobile value here (the
lookup identifier of mobile rows, identifiers.mobile, commChannels.mobile.value). The first
rule that fits a value wins:

1. plain digits: the country's code, then a mobile number's length (919800000001 for IN)
   are sent as they are. This is the fast path (one regular-expression match, no parse), which
   every cell of a clean file takes.
2. Spaces, dashes, dots, brackets and slashes are dropped. A leading `+`, or the country's
   international prefix (`00` in India), means a country code follows. A spreadsheet's
   `919800000001.0` is 919800000001, and `9.19800000001E+11` is too. `9.198E+11` is refused,
   because the spreadsheet rounded away digits.
3. The country's code with a mobile length after it (rule 1 again), or a national mobile
   number with or without the trunk prefix (`9800000005`, `09800000004`), gets the code in
   front.
4. Anything else is parsed by phonenumbers (libphonenumber) in the default region. Digits
   that are not a possible mobile number there are tried as international (`447911123456`).
   A number that is not a possible mobile number of its country is refused, with the reason.

"Possible" is libphonenumber's length test for the mobile numbers of a country, not a check
that the number exists. The API also takes only 8 to 15 digits in all (docs/api.md).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

API_DIGITS = range(8, 16)  # the API's rule for a mobile number, country code included
_SEPARATORS = re.compile(r"[\s().\-/\u2010-\u2015]+")
_WHOLE_FLOAT = re.compile(r"(\d{6,})\.0+", re.ASCII)   # 919800000001.0: a number written by a spreadsheet
_FRACTION = re.compile(r"\d{8,}\.\d{1,4}", re.ASCII)   # 91980000002.7: a sum's result, not a dotted number
_SCIENTIFIC = re.compile(r"(\d)(?:\.(\d+))?[eE]\+?(\d{1,2})", re.ASCII)
_PHONE_TEXT = re.compile(r"\+?\d+", re.ASCII)
_PLAIN_DIGITS = re.compile(r"\d+", re.ASCII)


class NotAMobile(ValueError):
    """Why a value is not a mobile number (the message completes `"<value>" is not ...`)."""


class MobileNumbers:
    """The mobile numbers of one default country (an ISO 3166 alpha-2 code phonenumbers knows)."""

    def __init__(self, region: str):
        import phonenumbers

        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if metadata is None:
            raise ValueError(f"{region!r} is not a country phonenumbers knows")
        self.region = region
        self.code = str(metadata.country_code)
        self.lengths = _mobile_lengths(metadata)
        fitting = [n for n in self.lengths if len(self.code) + n in API_DIGITS]
        self.clean = re.compile(self.code + _any_length(fitting), re.ASCII).fullmatch
        # the same, or an empty cell: all(map(...)) over a column at C speed finds a clean column
        self.clean_or_empty = re.compile(f"(?:{self.code}{_any_length(fitting)})?", re.ASCII).fullmatch
        self._national = re.compile(_any_length(fitting), re.ASCII).fullmatch
        # Trunk and international prefixes are regular expressions in some countries' metadata:
        # rules 2 and 3 use them only where they are plain digits (0, 00, 011); the parse does the rest.
        self._trunk = _plain(metadata.national_prefix_for_parsing) if not metadata.national_prefix_transform_rule \
            else None
        self._exit = _plain(metadata.international_prefix) or _plain(metadata.preferred_international_prefix)

    def normalise(self, text: str) -> str:
        """`text` (trimmed, not empty) as country code + national number; NotAMobile if it is none."""
        if self.clean(text):
            return text
        if _FRACTION.fullmatch(text) and not _WHOLE_FLOAT.fullmatch(text):
            raise NotAMobile("is not a mobile number: a number with a fraction (format the column as text and"
                             " export the file again)")
        compact = _spreadsheet_number(text) or _SEPARATORS.sub("", text)
        if not _PHONE_TEXT.fullmatch(compact):
            raise NotAMobile("is not a mobile number: it holds characters a phone number does not have"
                             " (digits, with spaces, dashes, dots, brackets and a leading + or 00)")
        international = compact.startswith("+")
        digits = compact.lstrip("+")
        if not international and self._exit and digits.startswith(self._exit):
            digits, international = digits[len(self._exit):], True
        if self.clean(digits):
            return digits
        if not international:
            national = digits[len(self._trunk):] if self._trunk and digits.startswith(self._trunk) else digits
            if self._national(national):
                return self.code + national
        return self._parsed(digits, international)

    def _parsed(self, digits: str, international: bool) -> str:
        """Rule 4: phonenumbers decides, in the default region, then as international."""
        if international:
            return _possible("+" + digits, self.region)
        try:
            return _possible(digits, self.region)
        except NotAMobile as national:
            try:
                return _possible("+" + digits, self.region)
            except NotAMobile as with_code:
                # say what is wrong with the reading the value most likely meant
                raise (with_code if digits.startswith(self.code) else national) from None


def _possible(text: str, region: str) -> str:
    import phonenumbers
    from phonenumbers import NumberParseException, PhoneNumberType, ValidationResult

    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        raise NotAMobile(_unparsed(exc)) from None
    verdict = phonenumbers.is_possible_number_for_type_with_reason(number, PhoneNumberType.MOBILE)
    if verdict == ValidationResult.IS_POSSIBLE:
        digits = f"{number.country_code}{phonenumbers.national_significant_number(number)}"
        if len(digits) not in API_DIGITS:
            raise NotAMobile(f"is not a mobile number the API takes: {len(digits)} digits with the country"
                             " code, not 8 to 15")
        return digits
    country = phonenumbers.region_code_for_country_code(number.country_code or 0)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(country)
    if metadata is None:
        raise NotAMobile(f"is not a mobile number: {number.country_code} is not the code of a country"
                         " with mobile numbers")
    how = {ValidationResult.TOO_SHORT: "too short", ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "too short",
           ValidationResult.TOO_LONG: "too long"}.get(verdict, "not the length")
    lengths = " or ".join(map(str, _mobile_lengths(metadata)))
    raise NotAMobile(f"is not a mobile number: {how} for {country} ({lengths} digits after the country"
                     f" code {number.country_code})")


def _unparsed(exc) -> str:
    from phonenumbers import NumberParseException as Error

    return {
        Error.INVALID_COUNTRY_CODE: "is not a mobile number: invalid country code (no country's code starts"
                                    " it: after + or 00 comes the country code, e.g. 91 for India)",
        Error.TOO_SHORT_AFTER_IDD: "is not a mobile number: too short after its international prefix",
        Error.TOO_SHORT_NSN: "is not a mobile number: too short",
        Error.TOO_LONG: "is not a mobile number: too long",
        Error.NOT_A_NUMBER: "is not a mobile number: too few digits",
    }.get(exc.error_type, "is not a mobile number")


def _spreadsheet_number(text: str) -> str | None:
    """The digits of a number a spreadsheet wrote as a float: 919800000001.0, 9.19800000001E+11.
    NotAMobile when the exponent form lost digits (9.198E+11 keeps 4 of 12)."""
    if match := _WHOLE_FLOAT.fullmatch(text):
        return match.group(1)
    if match := _SCIENTIFIC.fullmatch(text):
        first, rest, exponent = match.group(1), match.group(2) or "", int(match.group(3))
        if len(first + rest) < exponent + 1:
            raise NotAMobile(f"is not a mobile number: a spreadsheet rounded it (it keeps {len(first + rest)} of"
                             f" its {exponent + 1} digits); format the column as text and export the file again")
        try:
            number = Decimal(text)
        except InvalidOperation:
            return None
        return str(int(number)) if number == number.to_integral_value() else None
    return None


def _mobile_lengths(metadata) -> tuple[int, ...]:
    """The lengths of the country's mobile numbers after its code (all its numbers' when
    its metadata describes no mobiles)."""
    mobile = metadata.mobile.possible_length if metadata.mobile else ()
    lengths = [n for n in mobile if n > 0] or [n for n in metadata.general_desc.possible_length if n > 0]
    return tuple(sorted(set(lengths)))


def _any_length(lengths: list[int]) -> str:
    """A pattern of digits of any of these lengths (none: a pattern that never matches)."""
    return "(?:" + "|".join(rf"\d{{{n}}}" for n in lengths) + ")" if lengths else "(?!)"


def _plain(prefix: str | None) -> str | None:
    return prefix if prefix and _PLAIN_DIGITS.fullmatch(prefix) else None
