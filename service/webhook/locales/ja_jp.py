"""Japanese (Japan): the card and PIN prompts in the Twilio tutorial's own wording
(reference/000_6d8fbaa8b5ff7101.txt, 「作成する内容」), every other sentence in the polite
register a Japanese telephone service uses (失礼いたします for goodbye, 米印 for the star key)."""

from __future__ import annotations

from types import MappingProxyType

from service.webhook.locales.catalog import Catalog

CATALOG = Catalog(
    tag="ja-JP",
    name="日本語",
    # Twilio's ja-JP voices (Twilio's docs). Mizuki first: a Polly standard voice, on which
    # every SSML tag works; the neural ones support <say-as> only in part.
    voices=(
        "Polly.Mizuki",
        "Polly.Takumi",
        "Polly.Kazuha-Neural",
        "Polly.Tomoko-Neural",
        "Google.ja-JP-Standard-B",
        "Google.ja-JP-Standard-C",
        "Google.ja-JP-Standard-D",
        "Google.ja-JP-Wavenet-B",
        "Google.ja-JP-Wavenet-C",
        "Google.ja-JP-Wavenet-D",
    ),
    messages=MappingProxyType(
        {
            "menu_option": "日本語は{digit}を押してください。",
            "ask_account": (
                "{digits}桁のアカウント番号を入力してください。ご登録の電話番号からおかけの"
                "場合は、米印を押してください。"
            ),
            "ask_card": "支払いカード番号の最後の4桁を入力してください",
            "ask_pin": "お客様の4桁の暗証番号(PIN)を入力してください",
            "retry_account": "申し訳ございません。{digits}桁の番号を確認できませんでした。",
            "retry": "申し訳ございません。4桁の数字を確認できませんでした。",
            "too_many_tries": (
                "申し訳ございません。入力を確認できませんでした。"
                "後ほどおかけ直しください。失礼いたします。"
            ),
            "not_found": "申し訳ございません。お客様の情報が見つかりませんでした。失礼いたします。",
            "try_later": (
                "申し訳ございません。ただいまお手続きを完了できません。"
                "後ほどおかけ直しください。失礼いたします。"
            ),
            "call_again": (
                "申し訳ございません。お手続きの有効期限が切れました。"
                "もう一度おかけ直しください。失礼いたします。"
            ),
            "found": (
                "ありがとうございます。お客様のアカウント番号は{account}、残高は{balance}です。"
            ),
            "amount": "{amount}",
            # As a Japanese speaker says dollars: 12ドル55セント, not 12.55ドル.
            "amount.USD": "{major}ドル{minor}セント",
            "amount.USD.whole": "{major}ドル",
            "amount.JPY": "{amount}円",
        }
    ),
)
